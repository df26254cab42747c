package oauth

// VerifiedTokens is how many tokens a's verified-token cache holds.
func VerifiedTokens(a *Authority) int { return a.verified.len() }

// MaxVerifiedTokens bounds the verified-token cache.
const MaxVerifiedTokens = maxVerifiedTokens
