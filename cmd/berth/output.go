package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/berth-dev/berth/api"
)

// printJSON prints an answer as the broker sent it, indented. raw is the
// broker's body; when it is missing or not JSON, v is encoded instead.
func (c *cli) printJSON(raw []byte, v any) error {
	var buf bytes.Buffer
	if len(raw) == 0 || json.Indent(&buf, raw, "", "  ") != nil {
		buf.Reset()
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		buf.Write(b)
	}
	buf.WriteByte('\n')
	_, err := c.stdout.Write(buf.Bytes())
	return err
}

// jsonField is one member of a JSON object, in document order.
type jsonField struct {
	key   string
	value json.RawMessage
}

// decodeObject splits a JSON object into its members, keeping their order.
func decodeObject(b []byte) ([]jsonField, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("answer is not a JSON object")
	}
	var fields []jsonField
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		fields = append(fields, jsonField{key, v})
	}
	return fields, nil
}

// mergePages joins the pages of a paginated answer into one: the first page's
// members, with listKey holding every page's items and no NextToken.
func mergePages(pages [][]byte, listKey string) ([]byte, error) {
	if len(pages) == 1 {
		return pages[0], nil
	}
	var items []json.RawMessage
	for _, p := range pages {
		fields, err := decodeObject(p)
		if err != nil {
			return nil, err
		}
		for _, f := range fields {
			if f.key != listKey {
				continue
			}
			var list []json.RawMessage
			if err := json.Unmarshal(f.value, &list); err != nil {
				return nil, fmt.Errorf("%s is not a list: %w", listKey, err)
			}
			items = append(items, list...)
		}
	}
	first, err := decodeObject(pages[0])
	if err != nil {
		return nil, err
	}
	if items == nil {
		items = []json.RawMessage{}
	}
	merged, err := json.Marshal(items)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteByte('{')
	n := 0
	for _, f := range first {
		if f.key == "NextToken" {
			continue
		}
		if f.key == listKey {
			f.value = merged
		}
		if n > 0 {
			b.WriteByte(',')
		}
		n++
		k, _ := json.Marshal(f.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(f.value)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// newTable returns a tab writer with the header row written.
func newTable(w io.Writer, headers ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	return tw
}

// row writes one table row; empty cells show as "-".
func row(tw *tabwriter.Writer, cells ...string) {
	for i, s := range cells {
		s = strings.Map(func(r rune) rune {
			if r == '\t' || r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, s)
		if s == "" {
			s = "-"
		}
		cells[i] = s
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

// serversTable prints servers, one per row.
func serversTable(w io.Writer, servers []api.Server, next string) error {
	tw := newTable(w, "ID", "HOSTNAME", "IP", "AVAILABILITY", "REASON", "CONSOLE", "VIRTUAL", "OS", "AGENT")
	for _, s := range servers {
		osName := strings.TrimSpace(s.Host.Os.Name + " " + s.Host.Os.Version)
		row(tw, s.Id, s.Hostname, s.Ip, s.Availability, s.UnavailabilityReason,
			strconv.Itoa(s.ConsoleSessionCount), strconv.Itoa(s.VirtualSessionCount), osName, s.SessionManagerAgentVersion)
	}
	return finishTable(tw, w, len(servers), "server", next)
}

// sessionsTable prints sessions, one per row.
func sessionsTable(w io.Writer, sessions []api.Session, next string) error {
	tw := newTable(w, "ID", "NAME", "OWNER", "TYPE", "STATE", "SUBSTATE", "SERVER", "CLIENTS", "CREATED", "REASON")
	for _, s := range sessions {
		server := ""
		if s.Server != nil {
			server = s.Server.Hostname
			if server == "" {
				server = s.Server.Id
			}
		}
		created := ""
		if !s.CreationTime.IsZero() {
			created = s.CreationTime.UTC().Format(time.RFC3339)
		}
		row(tw, s.Id, s.Name, s.Owner, s.Type, s.State, s.Substate, server,
			strconv.FormatInt(s.NumOfConnections, 10), created, s.StateReason)
	}
	return finishTable(tw, w, len(sessions), "session", next)
}

// finishTable flushes tw and adds a count line and, for a partial answer, the
// token of the next page.
func finishTable(tw *tabwriter.Writer, w io.Writer, n int, noun, next string) error {
	if err := tw.Flush(); err != nil {
		return err
	}
	if n != 1 {
		noun += "s"
	}
	fmt.Fprintf(w, "(%d %s)\n", n, noun)
	if next != "" {
		fmt.Fprintf(w, "more: --next-token %s\n", next)
	}
	return nil
}

// result is one item of a batch answer for resultsTable.
type result struct {
	id, state, code, reason string
	ok                      bool
}

// resultsTable prints the items of a batch answer, successes first.
func resultsTable(w io.Writer, idHeader string, results []result) error {
	tw := newTable(w, idHeader, "RESULT", "STATE", "CODE", "REASON")
	for _, r := range results {
		res := "failed"
		if r.ok {
			res = "ok"
		}
		row(tw, r.id, res, r.state, r.code, r.reason)
	}
	return tw.Flush()
}
