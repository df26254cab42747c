package hostinfo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
)

// EC2 instance metadata service (IMDSv2) defaults.
const (
	// DefaultIMDSURL is the IMDS base URL on EC2.
	DefaultIMDSURL = "http://169.254.169.254"
	// DefaultIMDSTimeout bounds one whole IMDS lookup: the token request and
	// the four reads.
	DefaultIMDSTimeout = 500 * time.Millisecond

	imdsTokenTTL = "21600" // seconds; the token is used at once and dropped
	imdsMaxBody  = 4 << 10
)

// errNoIMDS means that no IMDS gave a token: the host is not on EC2, or its
// metadata service is off or out of reach (hop limit).
var errNoIMDS = errors.New("no instance metadata service")

// awsCache is the outcome of the one IMDS lookup a Prober makes: nil AWS off
// EC2 or after a failure.
type awsCache struct {
	aws *agentproto.AWS
}

// probeAWS fills AWS from the EC2 instance metadata service (IMDSv2: a PUT
// for a session token, then GETs). The instance data does not change while
// the host runs, so the Prober looks it up once and keeps the answer, or the
// failure: a host off EC2 (nothing answers at the IMDS address) pays at most
// IMDSTimeout once and gets no AWS section, which is not an error (it is
// logged once at info level). A metadata service that gives a token and then
// fails is an error.
func probeAWS(ctx context.Context, p *Prober, r *agentproto.HostReport) error {
	p.awsMu.Lock()
	defer p.awsMu.Unlock()
	if p.aws == nil {
		aws, err := p.lookupIMDS(ctx)
		if err != nil && ctx.Err() != nil {
			return err // interrupted: try again next time
		}
		p.aws = &awsCache{aws: aws}
		if errors.Is(err, errNoIMDS) {
			if p.Logger != nil {
				p.Logger.Info("no EC2 instance metadata service; the host report has no AWS section", "err", err)
			}
			err = nil
		}
		if err != nil {
			return err
		}
	}
	if p.aws.aws != nil {
		a := *p.aws.aws
		r.AWS = &a
	}
	return nil
}

// lookupIMDS reads the instance data within IMDSTimeout.
func (p *Prober) lookupIMDS(ctx context.Context) (*agentproto.AWS, error) {
	base := strings.TrimSuffix(p.IMDSURL, "/")
	if base == "" {
		base = DefaultIMDSURL
	}
	timeout := p.IMDSTimeout
	if timeout <= 0 {
		timeout = DefaultIMDSTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{
		// A zero Transport uses no proxy: the address is link-local.
		Transport: &http.Transport{},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("imds: unexpected redirect")
		},
	}
	defer hc.CloseIdleConnections()

	token, _, err := imdsDo(ctx, hc, http.MethodPut, base+"/latest/api/token",
		"X-aws-ec2-metadata-token-ttl-seconds", imdsTokenTTL)
	if err != nil {
		return nil, fmt.Errorf("%w: token request: %w", errNoIMDS, err)
	}
	get := func(path string) (string, bool, error) {
		return imdsDo(ctx, hc, http.MethodGet, base+"/latest/meta-data/"+path, "X-aws-ec2-metadata-token", token)
	}
	var a agentproto.AWS
	for _, f := range []struct {
		path string
		dst  *string
	}{
		{"instance-id", &a.InstanceID},
		{"instance-type", &a.InstanceType},
		{"ami-id", &a.ImageID},
		{"placement/region", &a.Region},
	} {
		v, found, err := get(f.path)
		if err != nil {
			return nil, fmt.Errorf("imds %s: %w", f.path, err)
		}
		if found {
			*f.dst = v
		}
	}
	if a.Region == "" { // metadata older than placement/region
		az, found, err := get("placement/availability-zone")
		if err != nil {
			return nil, fmt.Errorf("imds placement/availability-zone: %w", err)
		}
		if found && len(az) > 1 {
			a.Region = strings.TrimRight(az, "abcdefghijklmnopqrstuvwxyz")
		}
	}
	if a.InstanceID == "" {
		return nil, errors.New("imds: no instance-id")
	}
	return &a, nil
}

// imdsDo makes one IMDS request with one header. found is false for a 404;
// other statuses than 200 are errors.
func imdsDo(ctx context.Context, hc *http.Client, method, url, header, value string) (body string, found bool, err error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return "", false, err
	}
	req.Header.Set(header, value)
	resp, err := hc.Do(req)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, imdsMaxBody))
	if err != nil {
		return "", false, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return strings.TrimSpace(string(data)), true, nil
	case http.StatusNotFound:
		return "", false, nil
	default:
		return "", false, fmt.Errorf("answered %s", resp.Status)
	}
}
