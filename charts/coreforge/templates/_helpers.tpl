{{/*
The chart name, or nameOverride.
*/}}
{{- define "coreforge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, else the release name if it
contains the chart name, else <release>-<chart>. Also the name of the leader
election Lease. DNS labels are at most 63 characters.
*/}}
{{- define "coreforge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
chart label value: <name>-<version>.
*/}}
{{- define "coreforge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource.
*/}}
{{- define "coreforge.labels" -}}
helm.sh/chart: {{ include "coreforge.chart" . }}
{{ include "coreforge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: coreforge
{{- end }}

{{/*
Labels that select the controller pods (never change them in an upgrade: a
Deployment's selector is immutable).
*/}}
{{- define "coreforge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coreforge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/*
The ServiceAccount the controller runs as.
*/}}
{{- define "coreforge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "coreforge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: repository@digest, or repository:tag (tag defaults to appVersion).
*/}}
{{- define "coreforge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Checks the schema cannot express with a readable message; rendered (as nothing)
by the Deployment.
*/}}
{{- define "coreforge.validate" -}}
{{- if and (not .Values.leaderElection.enabled) (gt (int .Values.replicas) 1) }}
{{- fail (printf "replicas is %d but leaderElection.enabled is false: without leader election more than one replica would reconcile the same releases at once; set replicas=1 or enable leader election" (int .Values.replicas)) }}
{{- end }}
{{- end }}

{{/*
The RBAC rules the controller needs on the objects it manages, in every namespace it
watches: granted cluster-wide by a ClusterRole (watchNamespaces empty) or by a Role
in each watched namespace. Leader election is granted separately (rbac.yaml), in the
release namespace only. Every rule says why it is there; nothing else is granted:
no delete anywhere (children go with their ImageRelease through owner references,
the garbage collector deletes them), no list/watch on Secrets, no access to other
kinds.
*/}}
{{- define "coreforge.rules" -}}
# Reconciles ImageReleases: the controller's main watch (list+watch) and reads
# before it acts (get). It never changes their spec; it creates one when a
# CoreBuild's tracked base moves (baseTracking.refresh: Automatic).
- apiGroups: ["coreforge.dev"]
  resources: ["imagereleases"]
  verbs: ["get", "list", "watch", "create"]
# Writes an ImageRelease's phase, conditions, checks and provenance: server-side
# apply of the status subresource is a patch; get/update for read-modify-write.
- apiGroups: ["coreforge.dev"]
  resources: ["imagereleases/status"]
  verbs: ["get", "patch", "update"]
# Reads the CoreBuild a release is made from (snapshot at attempt start) and watches
# CoreBuilds so their releases are reconciled when a CoreBuild appears or changes.
# Patches one field, spec.base, once a refresh release on a moved base is published
# (baseTracking.refresh: Automatic; field manager coreforge-base-refresh).
- apiGroups: ["coreforge.dev"]
  resources: ["corebuilds"]
  verbs: ["get", "list", "watch", "patch"]
# Summarises a CoreBuild's releases in its status (e.g. status.releases.published).
- apiGroups: ["coreforge.dev"]
  resources: ["corebuilds/status"]
  verbs: ["get", "patch", "update"]
# Creates the build and test Job of each attempt and watches the Jobs it owns to
# learn when they finish. Deletes the Jobs of attempts older than the kept ones
# (--keep-attempts); never updates one.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Reads the pods of its Jobs: a finished one's termination message carries the
# build result (digest) or the test report; a running one's status says why it does
# not start (ImagePullBackOff, Unschedulable). Watches their metadata (label
# coreforge.dev/release) to look again when one changes.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Creates the immutable per-attempt snapshot ConfigMaps it owns (and deletes those
# of attempts older than the kept ones), reads blueprint ConfigMaps named by
# CoreBuilds, and watches ConfigMap metadata so a release waiting for its blueprint
# resumes when the ConfigMap appears.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Records an Event on every phase transition and failure (events.k8s.io/v1; patch
# updates the count of a repeated event).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# The same for clients that still write core/v1 Events. list and watch: a Job
# whose pod was refused at creation (Pod Security admission, a quota) says so only
# in its FailedCreate events, which the controller watches to name the cause.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch", "list", "watch"]
# Reads the Secrets a CoreBuild names: the registry credentials (catalog.credentialsSecret)
# to publish releases, copying the verified image into the catalog and moving its tags,
# and the signing key (catalog.signingKeySecret) to sign them.
# get only: the names come from CoreBuilds and are not known when this is installed,
# so resourceNames cannot narrow it; without list or watch the controller can read
# no Secret whose name it was not given.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
