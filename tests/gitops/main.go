// Command gitops-check judges a coreforge object the way Argo CD and Flux do: Argo CD's
// health from a resource customization's Lua script (deploy/argocd/), run in a Lua VM set
// up as Argo CD sets it up, and kstatus (sigs.k8s.io/cli-utils), which Flux's health
// checks compute (kustomize-controller runs a fork of the same package).
//
//	gitops-check HEALTH.lua OBJECT.yaml|-   one JSON line: {"argocd":{...},"kstatus":{...}}
//	gitops-check test HEALTH_TEST.yaml...   runs every case of Argo CD's health_test.yaml
//	                                        format (plus `kstatus: <status>` per case)
//
// The test mode fails (exit 1) on any mismatch, on a file in testdata/ that no case
// judges, and when the script raises an error or returns no valid status for a case's
// object with any one field under `status` (or metadata.generation) deleted.
//
// What Argo CD does is taken from argoproj/argo-cd v3.5.1: util/lua/lua.go (the VM, the
// object, the result), util/lua/oslib_safe.go (the os subset), util/lua/health_test.go
// (the test file format) and gitops-engine/pkg/health/health.go (deletion, errors), with
// the gopher-lua and gopher-json versions that release pins (go.mod).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

// Verdict is a status and a message, as both tools report them.
type Verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// Judgement is what Argo CD and kstatus make of one object.
type Judgement struct {
	ArgoCD  Verdict `json:"argocd"`
	KStatus Verdict `json:"kstatus"`
}

func main() {
	var err error
	switch {
	case len(os.Args) >= 3 && os.Args[1] == "test":
		err = runTests(os.Args[2:])
	case len(os.Args) == 3:
		err = judgeOne(os.Args[1], os.Args[2])
	default:
		err = errors.New("usage: gitops-check HEALTH.lua OBJECT.yaml|-  or  gitops-check test HEALTH_TEST.yaml...")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gitops-check:", err)
		os.Exit(1)
	}
}

func judgeOne(scriptPath, objectPath string) error {
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		return err
	}
	var data []byte
	if objectPath == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(objectPath)
	}
	if err != nil {
		return err
	}
	obj, err := readObject(data)
	if err != nil {
		return fmt.Errorf("%s: %w", objectPath, err)
	}
	j, err := judge(string(script), obj)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(j)
}

// readObject reads YAML or JSON into the unstructured form client-go gives Argo CD and
// kstatus (integers as int64: kstatus reads generations with NestedInt64).
func readObject(data []byte) (*unstructured.Unstructured, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		return nil, err
	}
	return u, nil
}

func judge(script string, obj *unstructured.Unstructured) (Judgement, error) {
	res, err := status.Compute(obj)
	if err != nil {
		return Judgement{}, fmt.Errorf("kstatus: %w", err)
	}
	return Judgement{ArgoCD: argoHealth(script, obj), KStatus: Verdict{string(res.Status), res.Message}}, nil
}

// argoHealth mirrors gitops-engine's health.GetResourceHealth for a resource with a health
// customization: an object being deleted is "Pending deletion" without running the script
// (unless Argo CD's hook finalizer holds it), and a script error shows as Unknown with the
// error's text.
func argoHealth(script string, obj *unstructured.Unstructured) Verdict {
	if obj.GetDeletionTimestamp() != nil && !hasHookFinalizer(obj) {
		return Verdict{"Progressing", "Pending deletion"}
	}
	v, err := executeHealthLua(script, obj)
	if err != nil {
		return Verdict{"Unknown", err.Error()}
	}
	return v
}

func hasHookFinalizer(obj *unstructured.Unstructured) bool {
	for _, f := range obj.GetFinalizers() {
		if f == "argocd.argoproj.io/hook-finalizer" {
			return true
		}
	}
	return false
}

// executeHealthLua mirrors VM.runLua and VM.ExecuteHealthLua of util/lua/lua.go for a
// customization from argocd-cm (UseOpenLibs false, the default; Argo CD's own built-in
// scripts run with every library, so this is the stricter of the two).
func executeHealthLua(script string, obj *unstructured.Unstructured) (Verdict, error) {
	// lua.NewState(lua.Options{SkipOpenLibs: !vm.UseOpenLibs}), then only the package,
	// base and table libraries and Argo CD's "safe" os, each opened with CallByParam.
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return Verdict{}, err
		}
	}
	// `local os = require("os")` gets the safe subset.
	l.PreloadModule(lua.OsLibName, safeOsLoader)
	// A script gets one second.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	// The globals: actionParams (empty for a health script) and obj.
	l.SetGlobal("actionParams", l.CreateTable(0, 0))
	l.SetGlobal("obj", decodeValue(l, obj.Object))

	fn, err := l.LoadString(script)
	if err == nil {
		l.Push(fn)
		err = l.PCall(0, lua.MultRet, nil)
	}
	var apiErr *lua.ApiError
	if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorRun {
		apiErr.StackTrace = "" // Argo CD drops the stack trace from what users see.
	}
	if err != nil {
		return Verdict{}, err
	}

	// The returned table goes through JSON (layeh.com/gopher-json, as Argo CD) into
	// {status, message}. An empty table encodes as [] and, like any type mismatch, gives
	// an empty status; nil or nothing gives an empty status; a status outside Argo CD's
	// six gives Unknown.
	ret := l.Get(-1)
	switch ret.Type() {
	case lua.LTNil:
		return Verdict{}, nil
	case lua.LTTable:
	default:
		return Verdict{}, fmt.Errorf("expect table output from Lua script, not %s", ret.Type().String())
	}
	js, err := luajson.Encode(ret)
	if err != nil {
		return Verdict{}, err
	}
	var hs struct {
		Status  string `json:"status,omitempty"`
		Message string `json:"message,omitempty"`
	}
	if err := json.Unmarshal(js, &hs); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return Verdict{}, nil
		}
		return Verdict{}, err
	}
	switch hs.Status {
	case "Unknown", "Progressing", "Suspended", "Healthy", "Degraded", "Missing":
		return Verdict{hs.Status, hs.Message}, nil
	}
	return Verdict{"Unknown", "Lua returned an invalid health status"}, nil
}

// decodeValue mirrors decodeValue of util/lua/lua.go: JSON-like Go values to Lua values,
// integers included (an unstructured object holds int64), anything else nil.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case []any:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

// safeOs holds os.time and os.date, the only os functions Argo CD exposes. Argo CD's are
// copies of gopher-lua's; these are gopher-lua's own, taken from a scratch state.
var safeOs = func() map[string]lua.LGFunction {
	scratch := lua.NewState()
	defer scratch.Close()
	funcs := map[string]lua.LGFunction{}
	for _, name := range []string{"time", "date"} {
		funcs[name] = scratch.GetField(scratch.GetGlobal("os"), name).(*lua.LFunction).GFunction
	}
	return funcs
}()

// openSafeOs mirrors OpenSafeOs, which registers the functions as module "table". The
// table library is loaded already, so RegisterModule leaves it alone: in Argo CD a script
// sees no global `os` at all, only what require("os") returns.
func openSafeOs(l *lua.LState) int {
	l.Push(l.RegisterModule(lua.TabLibName, safeOs))
	return 1
}

func safeOsLoader(l *lua.LState) int {
	l.Push(l.SetFuncs(l.NewTable(), safeOs))
	return 1
}

// ---------------------------------------------------------------------------------
// Test mode

// testFile is Argo CD's health_test.yaml with an expected kstatus per case.
type testFile struct {
	Tests []struct {
		HealthStatus struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"healthStatus"`
		KStatus   string `json:"kstatus"`
		InputPath string `json:"inputPath"`
	} `json:"tests"`
}

func runTests(paths []string) error {
	cases, variants, failures := 0, 0, 0
	fail := func(format string, args ...any) {
		failures++
		fmt.Printf("FAIL "+format+"\n", args...)
	}
	for _, path := range paths {
		dir := filepath.Dir(path)
		scriptBytes, err := os.ReadFile(filepath.Join(dir, "health.lua"))
		if err != nil {
			return err
		}
		script := string(scriptBytes)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var tf testFile
		if err := yaml.UnmarshalStrict(data, &tf); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(tf.Tests) == 0 {
			fail("%s: no tests", path)
		}
		judged := map[string]bool{}
		for _, tc := range tf.Tests {
			cases++
			name := filepath.Join(dir, tc.InputPath)
			judged[filepath.Clean(name)] = true
			objData, err := os.ReadFile(name)
			if err != nil {
				fail("%s: %v", name, err)
				continue
			}
			obj, err := readObject(objData)
			if err != nil {
				fail("%s: %v", name, err)
				continue
			}
			got, err := judge(script, obj)
			if err != nil {
				fail("%s: %v", name, err)
				continue
			}
			want := Verdict{tc.HealthStatus.Status, tc.HealthStatus.Message}
			ok := true
			if got.ArgoCD != want {
				ok = false
				fail("%s: Argo CD health is %s %q, expected %s %q", name, got.ArgoCD.Status, got.ArgoCD.Message, want.Status, want.Message)
			}
			if got.KStatus.Status != tc.KStatus {
				ok = false
				fail("%s: kstatus is %s (%q), expected %q", name, got.KStatus.Status, got.KStatus.Message, tc.KStatus)
			}
			for _, v := range withoutOneField(obj) {
				variants++
				h := argoHealth(script, v.obj)
				if h.Status == "" || h.Status == "Unknown" {
					ok = false
					fail("%s without %s: Argo CD health is %q %q", name, v.path, h.Status, h.Message)
				}
			}
			if ok {
				fmt.Printf("ok   %s: %s %q, kstatus %s\n", name, got.ArgoCD.Status, got.ArgoCD.Message, got.KStatus.Status)
			}
		}
		captured, err := filepath.Glob(filepath.Join(dir, "testdata", "*.yaml"))
		if err != nil {
			return err
		}
		for _, c := range captured {
			if !judged[filepath.Clean(c)] {
				fail("%s: no case of %s judges it", c, path)
			}
		}
	}
	fmt.Printf("%d cases, %d variants without a field, %d failures\n", cases, variants, failures)
	if failures > 0 {
		return fmt.Errorf("%d failures", failures)
	}
	return nil
}

type variant struct {
	path string
	obj  *unstructured.Unstructured
}

// withoutOneField returns copies of obj, each with one field deleted: every field under
// status (at any depth, list items included), status itself and metadata.generation.
func withoutOneField(obj *unstructured.Unstructured) []variant {
	var out []variant
	if _, ok := obj.Object["metadata"].(map[string]any)["generation"]; ok {
		c := obj.DeepCopy()
		delete(c.Object["metadata"].(map[string]any), "generation")
		out = append(out, variant{"metadata.generation", c})
	}
	if st, ok := obj.Object["status"]; ok {
		c := obj.DeepCopy()
		delete(c.Object, "status")
		out = append(out, variant{"status", c})
		for _, p := range fieldPaths(st, nil) {
			c := obj.DeepCopy()
			c.Object["status"] = without(st, p)
			out = append(out, variant{"status" + render(p), c})
		}
	}
	return out
}

// fieldPaths lists the path of every map key and list item below v.
func fieldPaths(v any, prefix []any) [][]any {
	var out [][]any
	switch t := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := append(append([]any{}, prefix...), k)
			out = append(append(out, p), fieldPaths(t[k], p)...)
		}
	case []any:
		for i, item := range t {
			p := append(append([]any{}, prefix...), i)
			out = append(append(out, p), fieldPaths(item, p)...)
		}
	}
	return out
}

// without returns v with the field at path deleted, copying what lies on the path.
func without(v any, path []any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, item := range t {
			out[k] = item
		}
		k := path[0].(string)
		if len(path) == 1 {
			delete(out, k)
		} else {
			out[k] = without(t[k], path[1:])
		}
		return out
	case []any:
		out := append([]any{}, t...)
		i := path[0].(int)
		if len(path) == 1 {
			return append(out[:i], out[i+1:]...)
		}
		out[i] = without(t[i], path[1:])
		return out
	}
	return v
}

func render(path []any) string {
	var b strings.Builder
	for _, step := range path {
		switch s := step.(type) {
		case string:
			b.WriteString("." + s)
		case int:
			b.WriteString("[" + strconv.Itoa(s) + "]")
		}
	}
	return b.String()
}
