package main

import (
	"golang.org/x/time/rate"

	"github.com/berth-dev/berth/internal/dcvauth"
)

// dcvVerifier builds the DCV token verifier (POST
// /agent/validate-authentication-token on the agent port) of the
// dcv-token-verifier-* keys.
func (m *Main) dcvVerifier() *dcvauth.Handler {
	c := &m.Config
	servers, nets, _ := parseVerifierAllowed(c.DCVVerifierAllowed) // Validate checked it
	return dcvauth.New(dcvauth.Config{
		Tokens:   m.auth,
		Sessions: m.svc,
		Allowed:  nets,
		Servers:  servers,
		Rate:     rate.Limit(c.DCVVerifierRate),
		Burst:    2 * c.DCVVerifierRate,
		Logger:   m.Logger,
	})
}
