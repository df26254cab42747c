package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/api"
)

func getSessionScreenshotsCommand() *command {
	return &command{
		name:     "get-session-screenshots",
		synopsis: "--session-ids ID[,ID...] [--max-width N] [--max-height N] [--out DIR]",
		short:    "get screenshots of sessions (--out DIR: image files)",
		summary: "Get screenshots of sessions. With --out, write each image to DIR/<session-id>-<n>.<png|jpeg>\n" +
			"(n counts from 1) and print the paths instead of the JSON answer.",
		example: "berth get-session-screenshots --session-ids 3f2a...,77c1... --max-width 640 --out shots",
		setup: func(c *cli, fs *flag.FlagSet) action {
			var ids listValue
			fs.Var(&ids, "session-ids", "comma-separated `IDs` of the sessions (required)")
			maxW := &intValue{min: 1}
			fs.Var(maxW, "max-width", "largest image width in pixels, `N` (default: the broker's session-screenshot-max-width)")
			maxH := &intValue{min: 1}
			fs.Var(maxH, "max-height", "largest image height in pixels, `N` (default: the broker's session-screenshot-max-height)")
			out := fs.String("out", "", "write the images into `DIR` (created if missing)")
			return func(ctx context.Context, _ []string) error {
				if !ids.set {
					return usagef("--session-ids is required; e.g. --session-ids ID1,ID2 (list IDs with 'berth describe-sessions')")
				}
				if *out != "" {
					if err := os.MkdirAll(*out, 0o755); err != nil {
						return usagef("--out %s: %s; pass a directory berth can write to", quoteArg(*out), fsReason(err))
					}
				}
				cl, err := c.connect(ctx)
				if err != nil {
					return err
				}
				req := make([]api.GetSessionScreenshotRequest, len(ids.items))
				for i, id := range ids.items {
					req[i] = api.GetSessionScreenshotRequest{SessionId: id, MaxWidth: maxW.ptr(), MaxHeight: maxH.ptr()}
				}
				resp, err := cl.GetSessionScreenshots(ctx, req)
				if err != nil {
					return err
				}
				raw := c.rt.lastBody()
				var failed []string
				var results []result
				for _, f := range resp.UnsuccessfulList {
					id := f.GetSessionScreenshotRequestData.SessionId
					failed = append(failed, failureLine(id, "", f.FailureReason))
					results = append(results, result{id: id, reason: f.FailureReason})
				}
				switch {
				case *out != "":
					for _, s := range resp.SuccessfulList {
						for i, img := range s.SessionScreenshot.Images {
							p, err := writeImage(*out, s.SessionScreenshot.SessionId, i+1, img)
							if err != nil {
								return err
							}
							fmt.Fprintln(c.stdout, p)
						}
					}
				case c.table():
					tw := newTable(c.stdout, "SESSION ID", "IMAGE", "FORMAT", "PRIMARY", "BYTES", "CREATED")
					for _, s := range resp.SuccessfulList {
						for i, img := range s.SessionScreenshot.Images {
							row(tw, s.SessionScreenshot.SessionId, strconv.Itoa(i+1), img.Format, strconv.FormatBool(img.Primary),
								strconv.Itoa(base64.StdEncoding.DecodedLen(len(img.Data))), img.CreationTime.UTC().Format("2006-01-02T15:04:05Z"))
						}
					}
					if err := tw.Flush(); err != nil {
						return err
					}
					if len(results) > 0 {
						if err := resultsTable(c.stdout, "SESSION ID", results); err != nil {
							return err
						}
					}
				default:
					if err := c.printJSON(raw, resp); err != nil {
						return err
					}
				}
				if len(failed) > 0 {
					return &itemsError{lines: failed}
				}
				return nil
			}
		},
	}
}

// writeImage decodes one screenshot into dir/<session>-<n>.<format> and returns
// the path. Names are sanitized: the broker's answer never picks the path.
func writeImage(dir, session string, n int, img api.SessionScreenshotImage) (string, error) {
	data, err := base64.StdEncoding.DecodeString(img.Data)
	if err != nil {
		return "", fmt.Errorf("screenshot %d of session %s: data is not base64: %w", n, session, err)
	}
	ext := strings.ToLower(img.Format)
	switch ext {
	case "png", "jpeg":
	case "jpg":
		ext = "jpeg"
	default:
		ext = "img"
	}
	p := filepath.Join(dir, fmt.Sprintf("%s-%d.%s", safeName(session), n, ext))
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return "", fmt.Errorf("write screenshot: %w", err)
	}
	return p, nil
}

// safeName keeps letters, digits, '-', '_' and '.' (not leading) and replaces
// anything else with '_'.
func safeName(s string) string {
	b := []byte(s)
	for i, ch := range b {
		ok := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || (ch == '.' && i > 0)
		if !ok {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "session"
	}
	return string(b)
}
