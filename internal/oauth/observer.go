package oauth

import "errors"

// Observer is told of tokens issued and refused, for metrics. Its methods
// must be quick and safe for concurrent use. Reasons are a small fixed set
// (RefusalReasons), never free text.
type Observer interface {
	// TokenIssued counts one token of kind TokenAccess or TokenConnection.
	TokenIssued(kind string)
	// TokenRefused counts one refusal: kind is TokenRequest (the token
	// endpoint refused a request), TokenAccess, TokenConnection or
	// TokenExternal (a token failed verification); reason is one of
	// RefusalReasons.
	TokenRefused(kind, reason string)
}

// Kinds given to Observer.
const (
	// TokenAccess: access tokens (POST /oauth2/token, bearer tokens of
	// the API).
	TokenAccess = "access"
	// TokenConnection: connection tokens (GetSessionConnectionData, DCV
	// servers and gateways verifying them).
	TokenConnection = "connection"
	// TokenRequest: requests to the token endpoint.
	TokenRequest = "token_request"
	// TokenExternal: bearer tokens of the API from a registered external
	// authorization server (External).
	TokenExternal = "external"
)

// Reasons given to Observer.TokenRefused. The first four are the token
// endpoint's RFC 6749 error codes; the others say why a token failed
// verification.
const (
	RefusedInvalidRequest  = "invalid_request"
	RefusedUnsupportedType = "unsupported_grant_type"
	RefusedInvalidClient   = "invalid_client"
	RefusedServerError     = "server_error"

	RefusedMalformed      = "malformed"
	RefusedExpired        = "expired"
	RefusedUnknownKey     = "unknown_key"
	RefusedSignature      = "signature"
	RefusedWrongToken     = "wrong_token" // algorithm, type, audience, issuer or claims
	RefusedInactiveClient = "inactive_client"
	RefusedError          = "error" // the store failed

	// Reasons of external tokens (kind TokenExternal), which name what the
	// broker's own tokens count as wrong_token, and of tokens whose issuer
	// is not accepted at all (kind TokenAccess).
	RefusedAlgorithm       = "algorithm"        // not accepted, not the pinned one, or not the key's
	RefusedAudience        = "audience"         // aud lacks the registered audience
	RefusedIssuer          = "issuer"           // iss is not the registered issuer
	RefusedNotYetValid     = "not_yet_valid"    // nbf more than 60 s ahead
	RefusedKeysUnavailable = "keys_unavailable" // no key set could be fetched
	RefusedNotAccepted     = "not_accepted"     // the broker's own token with enable-authorization-server = false, or no server registered
)

// RefusalReasons lists every reason of Observer.TokenRefused.
func RefusalReasons() []string {
	return []string{RefusedInvalidRequest, RefusedUnsupportedType, RefusedInvalidClient, RefusedServerError,
		RefusedMalformed, RefusedExpired, RefusedUnknownKey, RefusedSignature, RefusedWrongToken, RefusedInactiveClient, RefusedError,
		RefusedAlgorithm, RefusedAudience, RefusedIssuer, RefusedNotYetValid, RefusedKeysUnavailable, RefusedNotAccepted}
}

// refusalReason turns a verification error into a reason for Observer.
func refusalReason(err error) string {
	var te *TokenError
	if !errors.As(err, &te) {
		return RefusedError
	}
	switch te.Reason {
	case reasonMalformed, reasonMalformedHeader, reasonHeaderTooLarge, reasonScheme:
		return RefusedMalformed
	case reasonExpired:
		return RefusedExpired
	case reasonUnknownKey:
		return RefusedUnknownKey
	case reasonSignature:
		return RefusedSignature
	case reasonInactiveClient:
		return RefusedInactiveClient
	}
	return RefusedWrongToken
}

// issued tells the Observer, if any, of an issued token.
func (a *Authority) issued(kind string) {
	if a.Observer != nil {
		a.Observer.TokenIssued(kind)
	}
}

// refused tells the Observer, if any, of a refusal.
func (a *Authority) refused(kind, reason string) {
	if a.Observer != nil {
		a.Observer.TokenRefused(kind, reason)
	}
}
