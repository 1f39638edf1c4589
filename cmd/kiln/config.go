package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// cliConfig is the CLI's own file: named kilnd servers ("contexts") and
// which one is current. It holds admin tokens, so it is written 0600.
type cliConfig struct {
	Current  string                    `yaml:"current,omitempty"`
	Contexts map[string]contextSetting `yaml:"contexts,omitempty"`
}

type contextSetting struct {
	APIURL string `yaml:"api_url"`
	Token  string `yaml:"token,omitempty"`
}

// configPath is $KILN_CONFIG, else $XDG_CONFIG_HOME/kiln/config.yaml, else
// ~/.config/kiln/config.yaml; empty when none can be told.
func (c *cli) configPath() string {
	if p := c.getenv("KILN_CONFIG"); p != "" {
		return p
	}
	if d := c.getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "kiln", "config.yaml")
	}
	if h := c.getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "kiln", "config.yaml")
	}
	return ""
}

// loadConfig reads the config file; a missing file is an empty config.
func (c *cli) loadConfig() (cliConfig, string, error) {
	path := c.configPath()
	var cfg cliConfig
	if path == "" {
		return cfg, "", nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, path, nil
	}
	if err != nil {
		return cfg, path, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, errEOF) {
		return cfg, path, fmt.Errorf("%s", prefixYAMLErr(path, err))
	}
	return cfg, path, nil
}

// saveConfig writes the file through a temporary file, so a crash leaves
// the old one, and with mode 0600 in a 0700 directory: it holds tokens.
func saveConfig(path string, cfg cliConfig) error {
	if path == "" {
		return errors.New("no place for the config file: set HOME, XDG_CONFIG_HOME or KILN_CONFIG")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// target is the kilnd a command talks to, and where that choice came from,
// for the hint when it does not answer.
type target struct {
	URL, Token, Source string
}

// target resolves the server: --api-url, else KILN_API_URL, else the
// context (--context, KILN_CONTEXT, the current one), else the default.
// The token is KILN_ADMIN_TOKEN, else the context's.
func (c *cli) target() (target, error) {
	t := target{Token: c.getenv("KILN_ADMIN_TOKEN")}
	name := c.contextName
	if name == "" {
		name = c.getenv("KILN_CONTEXT")
	}
	var ctxSet *contextSetting
	if name != "" || (c.apiURL == "" && c.getenv("KILN_API_URL") == "") || t.Token == "" {
		cfg, path, err := c.loadConfig()
		if err != nil {
			return t, err
		}
		explicit := name != ""
		if name == "" {
			name = cfg.Current
		}
		if name != "" {
			s, ok := cfg.Contexts[name]
			if !ok && explicit {
				return t, fmt.Errorf("no context %q in %s (kiln context list)", name, path)
			}
			if ok {
				ctxSet = &s
			}
		}
	}
	switch {
	case c.apiURL != "":
		t.URL, t.Source = c.apiURL, "from --api-url"
	case c.getenv("KILN_API_URL") != "":
		t.URL, t.Source = c.getenv("KILN_API_URL"), "from KILN_API_URL"
	case ctxSet != nil:
		t.URL, t.Source = ctxSet.APIURL, "from context "+name
	default:
		t.URL, t.Source = defaultAPIURL, "the default"
	}
	// A context's token goes only to that context's server: with the URL
	// overridden it would be sent to a server the context does not name.
	if t.Token == "" && ctxSet != nil && strings.TrimRight(ctxSet.APIURL, "/") == strings.TrimRight(t.URL, "/") {
		t.Token = ctxSet.Token
	}
	return t, nil
}

func (c *cli) contextCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "context",
		Aliases: []string{"contexts", "ctx"},
		Short:   "Name kilnd servers and switch between them",
		Long: "A context is a kilnd URL and, optionally, its admin token, kept in\n" +
			"$XDG_CONFIG_HOME/kiln/config.yaml (else ~/.config/kiln/config.yaml; KILN_CONFIG\n" +
			"overrides), mode 0600. --api-url, KILN_API_URL and KILN_ADMIN_TOKEN override it.",
	}
	cmd.AddCommand(c.contextCreateCmd(), c.contextUseCmd(), c.contextListCmd(), c.contextDeleteCmd())
	return cmd
}

func (c *cli) contextCreateCmd() *cobra.Command {
	var url, token, tokenFile string
	var use bool
	cmd := &cobra.Command{
		Use:   "create NAME --api-url URL [--token T | --token-file F]",
		Short: "Add (or replace) a context",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if url == "" {
				return errors.New("give the server: kiln context create NAME --api-url http://HOST:PORT")
			}
			if _, err := newClient(target{URL: url}, nil); err != nil {
				return err
			}
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return err
				}
				token = strings.TrimSpace(string(b))
			}
			cfg, path, err := c.loadConfig()
			if err != nil {
				return err
			}
			if cfg.Contexts == nil {
				cfg.Contexts = map[string]contextSetting{}
			}
			_, existed := cfg.Contexts[args[0]]
			cfg.Contexts[args[0]] = contextSetting{APIURL: url, Token: token}
			if use || cfg.Current == "" {
				cfg.Current = args[0]
			}
			if err := saveConfig(path, cfg); err != nil {
				return err
			}
			verb := "created"
			if existed {
				verb = "replaced"
			}
			fmt.Fprintf(c.stdout, "context %s %s (%s)", args[0], verb, url)
			if cfg.Current == args[0] {
				fmt.Fprint(c.stdout, ", current")
			}
			fmt.Fprintln(c.stdout)
			return nil
		},
	}
	// Named --api-url like the global flag, which it shadows here: the URL
	// to store, not the server to talk to.
	cmd.Flags().StringVar(&url, "api-url", "", "kilnd URL, e.g. http://10.0.0.5:8080 (required)")
	cmd.Flags().StringVar(&token, "token", "", "admin token (lands in shell history; --token-file does not)")
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "read the admin token from this file")
	cmd.Flags().BoolVar(&use, "use", false, "make it the current context")
	return cmd
}

func (c *cli) contextUseCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "use NAME",
		Short:             "Make a context the current one",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeContexts,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, path, err := c.loadConfig()
			if err != nil {
				return err
			}
			s, ok := cfg.Contexts[args[0]]
			if !ok {
				return fmt.Errorf("no context %q (kiln context list)", args[0])
			}
			cfg.Current = args[0]
			if err := saveConfig(path, cfg); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "now using context %s (%s)\n", args[0], s.APIURL)
			if u := c.getenv("KILN_API_URL"); u != "" {
				fmt.Fprintf(c.stderr, "kiln: KILN_API_URL=%s is set and overrides the context\n", u)
			}
			return nil
		},
	}
}

func (c *cli) contextDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "delete NAME",
		Aliases:           []string{"rm"},
		Short:             "Forget a context",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeContexts,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, path, err := c.loadConfig()
			if err != nil {
				return err
			}
			if _, ok := cfg.Contexts[args[0]]; !ok {
				return fmt.Errorf("no context %q (kiln context list)", args[0])
			}
			delete(cfg.Contexts, args[0])
			if cfg.Current == args[0] {
				cfg.Current = ""
			}
			if err := saveConfig(path, cfg); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "context %s deleted\n", args[0])
			return nil
		},
	}
}

func (c *cli) contextListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List contexts (tokens are never shown)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := c.loadConfig()
			if err != nil {
				return err
			}
			names := make([]string, 0, len(cfg.Contexts))
			for n := range cfg.Contexts {
				names = append(names, n)
			}
			sort.Strings(names)
			type item struct {
				Name     string `json:"name" yaml:"name"`
				APIURL   string `json:"api_url" yaml:"api_url"`
				TokenSet bool   `json:"token_set" yaml:"token_set"`
				Current  bool   `json:"current" yaml:"current"`
			}
			items := make([]item, 0, len(names))
			rows := make([][]string, 0, len(names))
			for _, n := range names {
				s := cfg.Contexts[n]
				it := item{n, s.APIURL, s.Token != "", n == cfg.Current}
				items = append(items, it)
				cur, tok := "", "-"
				if it.Current {
					cur = "*"
				}
				if it.TokenSet {
					tok = "set"
				}
				rows = append(rows, []string{cur, n, s.APIURL, tok})
			}
			if c.structured() {
				return c.printValue(map[string]any{"items": items})
			}
			return printTable(c.stdout, []string{"CURRENT", "NAME", "API URL", "TOKEN"}, rows)
		},
	}
}

func (c *cli) completeContexts(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	cfg, _, err := c.loadConfig()
	if err != nil || len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for n := range cfg.Contexts {
		if strings.HasPrefix(n, toComplete) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, cobra.ShellCompDirectiveNoFileComp
}
