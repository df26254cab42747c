package main

import (
	"context"
	"flag"
	"fmt"
	"sort"
	"strings"
)

func completionCommand() *command {
	return &command{
		name:       "completion",
		synopsis:   "bash",
		short:      "print a bash completion script",
		positional: "SHELL",
		summary:    "Print a shell completion script (bash only).",
		example:    "source <(berth completion bash)   # or save it to /etc/bash_completion.d/berth",
		setup: func(c *cli, fs *flag.FlagSet) action {
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 || args[0] != "bash" {
					got := strings.Join(args, " ")
					if got == "" {
						return usagef("name the shell: 'berth completion bash'")
					}
					return usagef("shell %s is not supported; use 'berth completion bash'", quoteArg(got))
				}
				_, err := fmt.Fprint(c.stdout, c.bashCompletion())
				return err
			}
		},
	}
}

// bashCompletion generates the bash completion script from the command table,
// so it always lists the options berth really takes (aliases left out).
func (c *cli) bashCompletion() string {
	gfs := newFlagSet("berth")
	c.globalFlags(gfs)
	var globals, valued []string
	gfs.VisitAll(func(f *flag.Flag) {
		globals = append(globals, "--"+f.Name)
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
			valued = append(valued, "--"+f.Name)
		}
	})
	sort.Strings(globals)
	sort.Strings(valued)
	var names []string
	var b strings.Builder
	b.WriteString(`# bash completion for berth. Load it with:
#   source <(berth completion bash)
_berth() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    case "$prev" in
        --conf|--ca-bundle|--permissions-file|--permission-file)
            COMPREPLY=( $(compgen -f -- "$cur") ); return ;;
        --out)
            COMPREPLY=( $(compgen -d -- "$cur") ); return ;;
        --type)
            COMPREPLY=( $(compgen -W "Console Virtual" -- "$cur") ); return ;;
        --output)
            COMPREPLY=( $(compgen -W "json table" -- "$cur") ); return ;;
        --enqueue-request)
            COMPREPLY=( $(compgen -W "true false" -- "$cur") ); return ;;
    esac
    local cmd="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            -*) ;;
            *)
                case "${COMP_WORDS[i-1]}" in
                    ` + strings.Join(valued, "|") + `) continue ;;
                esac
                cmd="${COMP_WORDS[i]}"
                break ;;
        esac
    done
    local globals="` + strings.Join(globals, " ") + `"
    local opts
    case "$cmd" in
`)
	for _, cmd := range commands() {
		names = append(names, cmd.name)
	}
	fmt.Fprintf(&b, "        \"\")\n            if [[ \"$cur\" == -* ]]; then opts=\"$globals --version --help\"; else opts=%q; fi ;;\n", strings.Join(names, " "))
	for _, cmd := range commands() {
		var opts []string
		switch cmd.name {
		case "help":
			opts = names
		case "completion":
			opts = []string{"bash"}
		default:
			fs := newFlagSet(cmd.name)
			cmd.setup(c, fs)
			fs.VisitAll(func(f *flag.Flag) {
				if !strings.HasPrefix(f.Usage, aliasPrefix) {
					opts = append(opts, "--"+f.Name)
				}
			})
			sort.Strings(opts)
			opts = append(opts, "--help", "$globals")
		}
		fmt.Fprintf(&b, "        %s) opts=\"%s\" ;;\n", cmd.name, strings.Join(opts, " "))
	}
	b.WriteString(`    esac
    COMPREPLY=( $(compgen -W "$opts" -- "$cur") )
}
complete -o default -F _berth berth
`)
	return b.String()
}
