#!/bin/sh
# coreforge contract test script: runs inside the built image itself (by digest). It
# only observes: the version of each contract package, the kind of each contract path,
# the user, each contract variable, and the exit code and output of each named check.
# The controller judges the report against the contract. The report is one JSON object
# in $COREFORGE_RESULT_FILE (the container's termination message, at most 4 KiB), so
# outputs are cut to $COREFORGE_OUTPUT_BUDGET bytes and dropped if it is still too big.
#
# Input: COREFORGE_PACKAGES (space-separated names), COREFORGE_FILES (one path a line),
# COREFORGE_ENV_NAMES (space-separated), COREFORGE_CHECK_COUNT and, for i in 1..count,
# COREFORGE_CHECK_<i>_NAME and COREFORGE_CHECK_<i>_RUN.
set -u

result=${COREFORGE_RESULT_FILE:-/dev/termination-log}
budget=${COREFORGE_OUTPUT_BUDGET:-256}
limit=4000
tmp=$(mktemp -d 2>/dev/null) || { tmp=/tmp/coreforge-test.$$; mkdir -p "$tmp"; } ||
  { echo "coreforge: no writable /tmp (the test Job mounts one)" >&2; exit 1; }
tab=$(printf '\t')
cr=$(printf '\r')

# A JSON string from stdin: printable ASCII only, escaped.
json() {
  tr -cd '\11\12\15\40-\176' |
    sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e "s/$tab/\\\\t/g" -e "s/$cr/\\\\r/g" |
    awk 'BEGIN { ORS = ""; printf "\"" } NR > 1 { printf "\\n" } { print } END { printf "\"" }'
}
# "value" as a JSON string, or null when the second argument is "unset".
json_or_null() {
  if [ "$2" = unset ]; then printf null; else printf '%s' "$1" | head -c 256 | json; fi
}

pm=null
if command -v dpkg-query >/dev/null 2>&1; then pm=dpkg
elif command -v rpm >/dev/null 2>&1; then pm=rpm
elif command -v apk >/dev/null 2>&1; then pm=apk
fi
pkgver() {
  case $pm in
    dpkg)
      s=$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$1" 2>/dev/null) || return 1
      case $s in ii*) printf '%s' "${s#???}" ;; *) return 1 ;; esac ;;
    rpm) rpm -q --qf '%|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}' "$1" 2>/dev/null || return 1 ;;
    apk)
      line=$(apk list --installed "$1" 2>/dev/null | head -n 1)
      [ -n "$line" ] || return 1
      v=${line%% *}
      printf '%s' "${v#"$1"-}" ;;
    *) return 1 ;;
  esac
}

# Packages.
printf '{' >"$tmp/packages"
sep=
for p in ${COREFORGE_PACKAGES:-}; do
  if v=$(pkgver "$p"); then state="set"; else v=; state="unset"; fi
  printf '%s"%s":%s' "$sep" "$p" "$(json_or_null "$v" "$state")" >>"$tmp/packages"
  sep=,
done
printf '}' >>"$tmp/packages"

# Files.
printf '{' >"$tmp/files"
sep=
printf '%s\n' "${COREFORGE_FILES:-}" | while IFS= read -r f; do
  [ -n "$f" ] || continue
  if [ -d "$f" ]; then k='"directory"'
  elif [ -f "$f" ] && [ -x "$f" ]; then k='"executable"'
  elif [ -f "$f" ]; then k='"file"'
  elif [ -e "$f" ] || [ -L "$f" ]; then k='"other"'
  else k=null
  fi
  printf '%s%s:%s' "$sep" "$(printf '%s' "$f" | json)" "$k" >>"$tmp/files"
  sep=,
done
printf '}' >>"$tmp/files"

# Environment.
printf '{' >"$tmp/env"
sep=
for n in ${COREFORGE_ENV_NAMES:-}; do
  # Names are validated by the API server ([A-Za-z_][A-Za-z0-9_]*), so eval is safe.
  eval "state=\${$n+set}; v=\${$n-}"
  [ "$state" = set ] || state="unset"
  printf '%s"%s":%s' "$sep" "$n" "$(json_or_null "$v" "$state")" >>"$tmp/env"
  sep=,
done
printf '}' >>"$tmp/env"

# Named checks: once with their output, once without, in case the report is too big.
printf '[' >"$tmp/checks"
printf '[' >"$tmp/checks-bare"
i=1
count=${COREFORGE_CHECK_COUNT:-0}
while [ "$i" -le "$count" ]; do
  name='' run=''
  eval "name=\${COREFORGE_CHECK_${i}_NAME}; run=\${COREFORGE_CHECK_${i}_RUN}"
  sh -c "$run" >"$tmp/out" 2>&1 </dev/null
  code=$?
  [ "$i" -gt 1 ] && { printf ',' >>"$tmp/checks"; printf ',' >>"$tmp/checks-bare"; }
  printf '{"name":"%s","exit":%d,"output":%s}' "$name" "$code" "$(head -c "$budget" "$tmp/out" | json)" >>"$tmp/checks"
  printf '{"name":"%s","exit":%d}' "$name" "$code" >>"$tmp/checks-bare"
  i=$((i + 1))
done
printf ']' >>"$tmp/checks"
printf ']' >>"$tmp/checks-bare"

user=$(id -un 2>/dev/null || true)
uid=$(id -u 2>/dev/null || true)
report() {
  printf '{"packageManager":%s,"packages":%s,"files":%s,"user":%s,"uid":%s,"env":%s,"checks":%s}\n' \
    "$([ "$pm" = null ] && echo null || echo "\"$pm\"")" \
    "$(cat "$tmp/packages")" "$(cat "$tmp/files")" \
    "$(printf '%s' "$user" | json)" "$(printf '%s' "$uid" | json)" \
    "$(cat "$tmp/env")" "$(cat "$tmp/$1")"
}
report checks >"$tmp/report"
if [ "$(wc -c <"$tmp/report")" -gt "$limit" ]; then
  report checks-bare >"$tmp/report"
fi
cat "$tmp/report" >"$result" || exit 1
rm -rf "$tmp"
