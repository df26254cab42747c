package gateway_test

import (
	"context"
	"crypto/tls"
	"log"
	"log/slog"
	"net"
	"strconv"

	"github.com/berth-dev/berth/internal/driver/vnc"
	"github.com/berth-dev/berth/internal/gateway"
	"github.com/berth-dev/berth/internal/oauth"
)

// Example wires the vnc driver and the gateway as cmd/berth-agent does: the
// driver is the gateway's Sessions, the broker's JWKS verifies tokens.
func Example() {
	ctx := context.Background()
	logger := slog.Default()
	drv, err := vnc.New(vnc.Config{
		InitFolder:    "/var/lib/berth/agent/init",
		AutorunFolder: "/var/lib/berth/agent/autorun",
		StateDir:      "/var/lib/berth/agent/vnc",
		Logger:        logger,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer drv.Close() // sessions keep running

	cert, err := tls.LoadX509KeyPair("/etc/berth/gateway.pem", "/etc/berth/gateway.key")
	if err != nil {
		log.Fatal(err)
	}
	gw := gateway.New(gateway.Config{
		Addr:        net.JoinHostPort("0.0.0.0", strconv.Itoa(8443)),
		Certificate: cert,
		NoVNCPath:   "/usr/share/novnc",
		WebURLPath:  "/",
		Verifier:    &oauth.RemoteKeySet{URL: "https://broker.example:8445/.well-known/jwks.json"},
		Sessions:    drv,
		Logger:      logger,
	})
	defer gw.Close()
	go gw.Run(ctx) // the agent's run group owns this goroutine and waits for it
	// ... agent.Run with Driver: drv ...
}
