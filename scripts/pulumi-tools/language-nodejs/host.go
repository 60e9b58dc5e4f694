package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// exitCodeErrorAlreadyReported is the exit code @pulumi/pulumi's cmd/run uses when
// the program failed and the failure was already shown to the user; the engine
// must then stop without printing anything more ("bail").
const exitCodeErrorAlreadyReported = 32

// runModule is what @pulumi/pulumi's program runner is resolved as, from the
// program's directory, so that hoisted and symlinked node_modules both work.
const runModule = "@pulumi/pulumi/cmd/run"

// runtimeOptions are the `runtime.options` of a nodejs Pulumi.yaml that this host honours.
type runtimeOptions struct {
	typescript bool   // default true: run *.ts through ts-node (from the project, else vendored)
	tsconfig   string // PULUMI_NODEJS_TSCONFIG_PATH
	nodeargs   string // extra node arguments, whitespace separated
}

// withProgramOptions overlays the options from a ProgramInfo on the defaults.
func (o runtimeOptions) withProgramOptions(opts *structpb.Struct) runtimeOptions {
	if opts == nil {
		return o
	}
	m := opts.AsMap()
	if v, ok := m["typescript"]; ok {
		switch t := v.(type) {
		case bool:
			o.typescript = t
		case string:
			if b, err := strconv.ParseBool(t); err == nil {
				o.typescript = b
			}
		}
	}
	if v, ok := m["tsconfig"].(string); ok {
		o.tsconfig = v
	}
	if v, ok := m["nodeargs"].(string); ok {
		o.nodeargs = v
	}
	return o
}

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	tracing  string
	defaults runtimeOptions

	mu            sync.Mutex
	engineAddress string
	children      map[*exec.Cmd]struct{}
}

func newHost(engineAddress, tracing string, defaults runtimeOptions) *host {
	return &host{
		engineAddress: engineAddress,
		tracing:       tracing,
		defaults:      defaults,
		children:      map[*exec.Cmd]struct{}{},
	}
}

func (h *host) engine() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.engineAddress
}

// Handshake records the engine address when the engine sends it this way.
func (h *host) Handshake(
	_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if req.GetEngineAddress() != "" {
		h.engineAddress = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version.Version}, nil
}

// GetRequiredPlugins reports nothing: plugins are found when the program asks for them.
func (h *host) GetRequiredPlugins(
	context.Context, *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

// GetRequiredPackages reports nothing, for the same reason.
func (h *host) GetRequiredPackages(
	context.Context, *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

// Run executes the program with @pulumi/pulumi's runner and waits for it.
func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	opts := h.defaults.withProgramOptions(req.GetInfo().GetOptions())

	programDir := req.GetInfo().GetProgramDirectory()
	if programDir == "" {
		programDir = req.GetPwd()
	}
	if programDir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		programDir = wd
	}
	entryPoint := req.GetInfo().GetEntryPoint()
	if entryPoint == "" {
		entryPoint = req.GetProgram()
	}
	if entryPoint == "" {
		entryPoint = "."
	}
	rootDir := req.GetInfo().GetRootDirectory()
	if rootDir == "" {
		rootDir = programDir
	}

	node, err := exec.LookPath("node")
	if err != nil {
		return &pulumirpc.RunResponse{
			Error: "could not find `node` on the PATH; install Node.js to run Pulumi Node.js programs",
		}, nil
	}

	runPath, err := resolveRunner(ctx, node, programDir)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}

	args := strings.Fields(opts.nodeargs)
	args = append(args, runPath, "--monitor", req.GetMonitorAddress())
	if engine := h.engine(); engine != "" {
		args = append(args, "--engine", engine)
	}
	if req.GetOrganization() != "" {
		args = append(args, "--organization", req.GetOrganization())
	}
	args = append(args,
		"--project", req.GetProject(),
		"--root-directory", rootDir,
		"--stack", req.GetStack(),
		"--pwd", programDir,
	)
	if req.GetDryRun() {
		args = append(args, "--dry-run")
	}
	if req.GetParallel() > 0 {
		args = append(args, "--parallel", strconv.Itoa(int(req.GetParallel())))
	}
	if h.tracing != "" {
		args = append(args, "--tracing", h.tracing)
	}
	args = append(args, entryPoint)
	args = append(args, req.GetArgs()...)

	env, err := programEnv(req, opts)
	if err != nil {
		return nil, err
	}

	cmd := exec.Command(node, args...)
	cmd.Dir = programDir
	cmd.Env = env
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	logging.V(5).Infof("language-nodejs: running %s %s", node, strings.Join(args, " "))

	if err := cmd.Start(); err != nil {
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("could not start node: %v", err)}, nil
	}
	h.track(cmd)
	err = cmd.Wait()
	h.untrack(cmd)

	if err == nil {
		return &pulumirpc.RunResponse{}, nil
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		if exitErr.ExitCode() == exitCodeErrorAlreadyReported {
			return &pulumirpc.RunResponse{Bail: true}, nil
		}
		if exitErr.ExitCode() >= 0 {
			return &pulumirpc.RunResponse{
				Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
			}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("Program was terminated: %v", exitErr)}, nil
	}
	return &pulumirpc.RunResponse{Error: fmt.Sprintf("Problem running program: %v", err)}, nil
}

// programEnv is the environment of the program: ours, plus the configuration and
// the switches that @pulumi/pulumi reads from the environment.
func programEnv(req *pulumirpc.RunRequest, opts runtimeOptions) ([]string, error) {
	config := req.GetConfig()
	if config == nil {
		config = map[string]string{}
	}
	configJSON, err := json.Marshal(config)
	if err != nil {
		return nil, fmt.Errorf("encoding config: %w", err)
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secretKeysJSON, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, fmt.Errorf("encoding config secret keys: %w", err)
	}
	// exec.Cmd keeps the last value of a duplicated variable, so ours win.
	env := append(os.Environ(),
		"PULUMI_CONFIG="+string(configJSON),
		"PULUMI_CONFIG_SECRET_KEYS="+string(secretKeysJSON),
		"PULUMI_NODEJS_TYPESCRIPT="+strconv.FormatBool(opts.typescript),
	)
	if opts.tsconfig != "" {
		env = append(env, "PULUMI_NODEJS_TSCONFIG_PATH="+opts.tsconfig)
	}
	return env, nil
}

// resolveRunner finds @pulumi/pulumi's cmd/run as Node would from dir.
// PULUMI_LANGUAGE_NODEJS_RUN_PATH overrides the lookup.
func resolveRunner(ctx context.Context, node, dir string) (string, error) {
	if p := os.Getenv("PULUMI_LANGUAGE_NODEJS_RUN_PATH"); p != "" {
		return p, nil
	}
	return resolveModule(ctx, node, dir, runModule)
}

// resolveModule asks node where module resolves to from dir (require.resolve).
func resolveModule(ctx context.Context, node, dir, module string) (string, error) {
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, node, "-e",
		"process.stdout.write(require.resolve(process.argv[1]))", module)
	cmd.Dir = dir
	cmd.Stdout = &out
	cmd.Stderr = &errOut
	if err := cmd.Run(); err != nil || out.Len() == 0 {
		return "", fmt.Errorf("could not find %s from %s: it looks like the Pulumi SDK has not been "+
			"installed; have you run `npm install`? (%v: %s)", module, dir, err,
			strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

func (h *host) track(cmd *exec.Cmd) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.children[cmd] = struct{}{}
}

func (h *host) untrack(cmd *exec.Cmd) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.children, cmd)
}

func (h *host) killChildren() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for cmd := range h.children {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
	}
}

// RunPlugin runs a plugin written in Node.js: a policy pack (kind "analyzer", through
// @pulumi/pulumi's cmd/run-policy-pack) or a provider (kind "resource" and others,
// through cmd/run-plugin). Both runners are resolved from the plugin's own directory.
// The plugin prints its port on stdout, which we stream back to the engine as is.
func (h *host) RunPlugin(
	req *pulumirpc.RunPluginRequest, stream grpc.ServerStreamingServer[pulumirpc.RunPluginResponse],
) error {
	ctx := stream.Context()
	opts := h.defaults.withProgramOptions(req.GetInfo().GetOptions())

	pluginDir := req.GetInfo().GetProgramDirectory()
	if pluginDir == "" {
		pluginDir = req.GetProgram()
	}
	if pluginDir == "" {
		pluginDir = req.GetPwd()
	}
	entryPoint := req.GetInfo().GetEntryPoint()
	if entryPoint == "" {
		entryPoint = "."
	}

	node, err := exec.LookPath("node")
	if err != nil {
		return status.Error(codes.FailedPrecondition, "could not find `node` on the PATH")
	}

	args := strings.Fields(opts.nodeargs)
	switch req.GetKind() {
	case "analyzer":
		runner, err := resolveModule(ctx, node, pluginDir, "@pulumi/pulumi/cmd/run-policy-pack")
		if err != nil {
			return err
		}
		// run-policy-pack takes <engine-address> <program>; the engine address is the last
		// (the only positional) argument the engine passes to a plugin.
		engine := h.engine()
		if n := len(req.GetArgs()); n > 0 {
			engine = req.GetArgs()[n-1]
		}
		args = append(args, runner, "--", engine, entryPoint)
	default:
		runner, err := resolveModule(ctx, node, pluginDir, "@pulumi/pulumi/cmd/run-plugin")
		if err != nil {
			return err
		}
		// run-plugin takes <program> [args...]; "--" keeps the engine's flags and address
		// intact for the plugin's own process.argv.
		args = append(args, runner, "--", entryPoint)
		args = append(args, req.GetArgs()...)
	}

	env := req.GetEnv()
	if len(env) == 0 {
		env = os.Environ()
	}
	env = append(append([]string(nil), env...),
		"PULUMI_NODEJS_TYPESCRIPT="+strconv.FormatBool(opts.typescript))
	if opts.tsconfig != "" {
		env = append(env, "PULUMI_NODEJS_TSCONFIG_PATH="+opts.tsconfig)
	}

	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = pluginDir
	cmd.Env = env
	var sendMu sync.Mutex
	cmd.Stdout = pluginWriter{stream: stream, mu: &sendMu}
	cmd.Stderr = pluginWriter{stream: stream, mu: &sendMu, stderr: true}
	logging.V(5).Infof("language-nodejs: running plugin %s %s", node, strings.Join(args, " "))

	if err := cmd.Start(); err != nil {
		return fmt.Errorf("could not start node: %w", err)
	}
	h.track(cmd)
	err = cmd.Wait()
	h.untrack(cmd)

	code := 0
	if err != nil {
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			return fmt.Errorf("running plugin: %w", err)
		}
		code = exitErr.ExitCode()
	}
	sendMu.Lock()
	defer sendMu.Unlock()
	return stream.Send(&pulumirpc.RunPluginResponse{
		Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(code)},
	})
}

type pluginWriter struct {
	stream grpc.ServerStreamingServer[pulumirpc.RunPluginResponse]
	mu     *sync.Mutex
	stderr bool
}

func (w pluginWriter) Write(p []byte) (int, error) {
	data := append([]byte(nil), p...)
	resp := &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stdout{Stdout: data}}
	if w.stderr {
		resp = &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stderr{Stderr: data}}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.stream.Send(resp); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Cancel stops programs that are still running.
func (h *host) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	h.killChildren()
	return &emptypb.Empty{}, nil
}

// About describes the Node.js runtime that programs run on.
func (h *host) About(ctx context.Context, _ *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, "could not find `node` on the PATH")
	}
	out, err := exec.CommandContext(ctx, node, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("running node --version: %w", err)
	}
	return &pulumirpc.AboutResponse{
		Executable: node,
		Version:    strings.TrimPrefix(strings.TrimSpace(string(out)), "v"),
	}, nil
}

// GetProgramDependencies lists the dependencies declared in the program's
// package.json, with the versions installed in node_modules when present.
func (h *host) GetProgramDependencies(
	_ context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	dir := req.GetInfo().GetProgramDirectory()
	if dir == "" {
		dir = req.GetPwd()
	}
	manifestPath, ok := findUp(dir, "package.json")
	if !ok {
		return &pulumirpc.GetProgramDependenciesResponse{}, nil
	}
	var manifest struct {
		Dependencies    map[string]string `json:"dependencies"`
		DevDependencies map[string]string `json:"devDependencies"`
	}
	if err := readJSON(manifestPath, &manifest); err != nil {
		return nil, err
	}
	declared := map[string]string{}
	for name, v := range manifest.DevDependencies {
		declared[name] = v
	}
	for name, v := range manifest.Dependencies {
		declared[name] = v
	}
	names := make([]string, 0, len(declared))
	for name := range declared {
		names = append(names, name)
	}
	sort.Strings(names)

	root := filepath.Dir(manifestPath)
	deps := make([]*pulumirpc.DependencyInfo, 0, len(names))
	for _, name := range names {
		v := declared[name]
		var installed struct {
			Version string `json:"version"`
		}
		if readJSON(filepath.Join(root, "node_modules", name, "package.json"), &installed) == nil &&
			installed.Version != "" {
			v = installed.Version
		}
		deps = append(deps, &pulumirpc.DependencyInfo{Name: name, Version: v})
	}
	return &pulumirpc.GetProgramDependenciesResponse{Dependencies: deps}, nil
}

// InstallDependencies runs `npm install` when the program has a package.json but no
// node_modules yet; otherwise there is nothing to do.
func (h *host) InstallDependencies(
	req *pulumirpc.InstallDependenciesRequest,
	stream grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse],
) error {
	dir := req.GetInfo().GetProgramDirectory()
	if dir == "" {
		dir = req.GetDirectory()
	}
	if _, err := os.Stat(filepath.Join(dir, "package.json")); err != nil {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err == nil {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return status.Error(codes.FailedPrecondition, "could not find `npm` on the PATH")
	}
	cmd := exec.CommandContext(stream.Context(), npm, "install")
	cmd.Dir = dir
	cmd.Stdout = streamWriter{stream: stream}
	cmd.Stderr = streamWriter{stream: stream, stderr: true}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("npm install failed: %w", err)
	}
	return nil
}

type streamWriter struct {
	stream grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse]
	stderr bool
}

func (w streamWriter) Write(p []byte) (int, error) {
	data := append([]byte(nil), p...)
	resp := &pulumirpc.InstallDependenciesResponse{Stdout: data}
	if w.stderr {
		resp = &pulumirpc.InstallDependenciesResponse{Stderr: data}
	}
	if err := w.stream.Send(resp); err != nil {
		return 0, err
	}
	return len(p), nil
}

var _ io.Writer = streamWriter{}

func findUp(dir, name string) (string, bool) {
	for dir != "" {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", false
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
