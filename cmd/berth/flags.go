package main

import (
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// aliasPrefix starts the usage text of an option that only spells another one
// differently (the reference CLI's misspellings); help folds it into its target.
const aliasPrefix = "alias of --"

// listValue is a comma-separated list option (--server-ids a,b). Repeating the
// option adds to the list.
type listValue struct {
	items []string
	set   bool
}

func (l *listValue) String() string { return strings.Join(l.items, ",") }

// Set splits s on commas; empty items are errors.
func (l *listValue) Set(s string) error {
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return fmt.Errorf("empty item in the list; separate values with single commas, e.g. a,b")
		}
		l.items = append(l.items, item)
	}
	l.set = true
	return nil
}

// intValue is a whole-number option with an inclusive range; max 0 means no upper bound.
type intValue struct {
	n        int64
	set      bool
	min, max int64
}

func (v *intValue) String() string {
	if v == nil || !v.set {
		return ""
	}
	return strconv.FormatInt(v.n, 10)
}

func (v *intValue) rule() string {
	if v.max == 0 {
		return fmt.Sprintf("use a whole number of at least %d", v.min)
	}
	return fmt.Sprintf("use a whole number from %d to %d", v.min, v.max)
}

// Set parses s and checks the range.
func (v *intValue) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return fmt.Errorf("not a whole number; %s", v.rule())
	}
	if n < v.min || (v.max != 0 && n > v.max) {
		return fmt.Errorf("out of range; %s", v.rule())
	}
	v.n, v.set = n, true
	return nil
}

// ptr returns the value as *int64, nil when the option was not given.
func (v *intValue) ptr() *int64 {
	if !v.set {
		return nil
	}
	n := v.n
	return &n
}

// intPtr returns the value as *int, nil when the option was not given.
func (v *intValue) intPtr() *int {
	if !v.set {
		return nil
	}
	n := int(v.n)
	return &n
}

// parseBool reads the boolean spellings Python's configparser accepts.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "yes", "true", "on":
		return true, nil
	case "0", "no", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean; use true or false")
}

// boolValue is a boolean option that takes a value (--enqueue-request true), as
// the reference CLI's are.
type boolValue struct {
	b, set bool
}

func (v *boolValue) String() string {
	if v == nil || !v.set {
		return ""
	}
	return strconv.FormatBool(v.b)
}

// Set parses true/false (and yes/no, on/off, 1/0).
func (v *boolValue) Set(s string) error {
	b, err := parseBool(s)
	if err != nil {
		return err
	}
	v.b, v.set = b, true
	return nil
}

// choiceValue is an option with a fixed set of values, matched case-insensitively
// and stored as the canonical spelling.
type choiceValue struct {
	v       string
	choices []string
}

func (c *choiceValue) String() string {
	if c == nil {
		return ""
	}
	return c.v
}

// Set accepts one of the choices in any case.
func (c *choiceValue) Set(s string) error {
	for _, ch := range c.choices {
		if strings.EqualFold(strings.TrimSpace(s), ch) {
			c.v = ch
			return nil
		}
	}
	return fmt.Errorf("use one of %s", strings.Join(c.choices, ", "))
}

// alias registers name as another spelling of the option target.
func alias(fs *flag.FlagSet, name, target string) {
	fs.Var(fs.Lookup(target).Value, name, aliasPrefix+target)
}

// printOptions writes the options of fs, one per line, with their aliases and
// defaults, leaving out the names in skip (the global options).
func printOptions(w io.Writer, fs *flag.FlagSet, skip map[string]bool) {
	aliases := map[string][]string{}
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		switch {
		case skip[f.Name]:
		case strings.HasPrefix(f.Usage, aliasPrefix):
			t := strings.TrimPrefix(f.Usage, aliasPrefix)
			aliases[t] = append(aliases[t], "--"+f.Name)
		default:
			flags = append(flags, f)
		}
	})
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	for _, f := range flags {
		name, usage := flag.UnquoteUsage(f)
		left := "  --" + f.Name
		if name != "" {
			left += " " + name
		}
		if f.DefValue != "" && f.DefValue != "false" {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		if a := aliases[f.Name]; len(a) > 0 {
			sort.Strings(a)
			usage += " (also " + strings.Join(a, ", ") + ")"
		}
		if len(left) <= 28 {
			fmt.Fprintf(w, "%-30s%s\n", left, usage)
		} else {
			fmt.Fprintf(w, "%s\n%30s%s\n", left, "", usage)
		}
	}
}

// optionNames lists the names of fs's options, without aliases, sorted.
func optionNames(fs *flag.FlagSet) []string {
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.HasPrefix(f.Usage, aliasPrefix) {
			names = append(names, "--"+f.Name)
		}
	})
	sort.Strings(names)
	return names
}

// closest returns the candidate nearest to s by edit distance, or "" when none
// is near enough to be a likely typo.
func closest(s string, candidates []string) string {
	best, bestD := "", len(s)/3+2
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
