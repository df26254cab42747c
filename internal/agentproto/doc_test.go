package agentproto_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/agentproto"
)

// TestProtocolDoc keeps docs/protocol.md in step with the code: the current
// version, a history entry for it, and every message type, command kind and
// error code.
func TestProtocolDoc(t *testing.T) {
	data, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	want := []string{
		fmt.Sprintf("Current version: **%d**", agentproto.ProtocolVersion),
		fmt.Sprintf("- **%d** (", agentproto.ProtocolVersion),
		fmt.Sprintf("%d..%d", agentproto.MinProtocolVersion, agentproto.ProtocolVersion),
		fmt.Sprintf("%d MiB", agentproto.MaxMessageSize>>20),
	}
	for _, s := range []string{
		agentproto.TypeHello, agentproto.TypeWelcome, agentproto.TypeUpdate, agentproto.TypeAck,
		agentproto.TypeCommand, agentproto.TypeResult, agentproto.TypeError,
		agentproto.KindCreate, agentproto.KindDelete, agentproto.KindPermissions, agentproto.KindScreenshot,
		agentproto.CodeVersionUnsupported, agentproto.CodeBadMessage, agentproto.CodeConflict,
		agentproto.CodeReplaced, agentproto.CodeShuttingDown, agentproto.CodeInternal,
	} {
		want = append(want, "`"+s+"`")
	}
	for _, s := range want {
		if !strings.Contains(doc, s) {
			t.Errorf("docs/protocol.md does not mention %s", s)
		}
	}
}
