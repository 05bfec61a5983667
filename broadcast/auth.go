package broadcast

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/walcast/walcast/schema"
)

// Roles with special delivery rules; any other role is a regular user.
const (
	RoleAdmin      = "admin"
	RoleSupervisor = "supervisor"
)

// Principal is who a connection's token says it is, and what it may see.
//
// Its methods are the one place that decides visibility, for every kind of
// frame: Allows for messages (live, replayed, dashboards), SeesUser for
// presence entries and typing frames, SeesCommittee for subscriptions.
// Callers evaluate them against the principal in force when a frame is
// written (client.principal), never a copy kept from an earlier token.
type Principal struct {
	UserID     int64
	HasUser    bool // always true for a verified token: one naming no user is refused
	Role       string
	Committees map[int64]bool
	Expires    time.Time
}

// Allows reports whether the principal may receive m: admins see
// everything; others see their committees' messages, their own rows, and
// election-wide messages (no committee, no owner). A message whose scope
// is unknown (AdminOnly) reaches admins only. A personal dashboard reaches
// its owner only.
func (p *Principal) Allows(m *schema.Message) bool {
	if m.Type == schema.TypeDashboard && m.HasOwner {
		// A personal dashboard is its owner's alone, admins included:
		// they have the admin dashboard.
		return p.HasUser && m.Owner == p.UserID
	}
	if p.Role == RoleAdmin {
		return true
	}
	if m.AdminOnly {
		return false
	}
	if !m.HasCommittee && !m.HasOwner {
		return true
	}
	if m.HasCommittee && p.Committees[m.Committee] {
		return true
	}
	return m.HasOwner && p.HasUser && m.Owner == p.UserID
}

// SeesCommittee reports whether the principal may receive a committee's
// traffic: what a subscription may name.
func (p *Principal) SeesCommittee(id int64) bool {
	return p.Role == RoleAdmin || p.Committees[id]
}

// SeesUser reports whether the principal may see a user, listed in
// presence or typing, whose tokens name committees (sorted or not): the
// message rules applied to a person. Admins see everyone, a user sees
// themself, others see the users sharing one of their committees.
func (p *Principal) SeesUser(user int64, committees []int64) bool {
	if p.Role == RoleAdmin || (p.HasUser && p.UserID == user) {
		return true
	}
	for _, c := range committees {
		if p.Committees[c] {
			return true
		}
	}
	return false
}

// AuthConfig configures token verification.
type AuthConfig struct {
	Secret    []byte           // HS256 key; a Django SECRET_KEY works
	PublicKey crypto.PublicKey // RS256 or ES256 key
	Issuer    string           // required "iss", when set
	Audience  string           // required "aud", when set
	Leeway    time.Duration    // clock skew allowed on exp/nbf/iat; default 30 s
}

// LoadPublicKey reads a PEM public key (RSA or EC) for RS256/ES256 tokens.
func LoadPublicKey(path string) (crypto.PublicKey, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read jwt public key: %w", err)
	}
	if k, err := jwt.ParseRSAPublicKeyFromPEM(pem); err == nil {
		return k, nil
	}
	if k, err := jwt.ParseECPublicKeyFromPEM(pem); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("read jwt public key %s: not a PEM RSA or EC public key", path)
}

// Verifier checks access tokens.
type Verifier struct {
	cfg     AuthConfig
	methods []string
}

// NewVerifier returns a Verifier accepting exactly the algorithms its keys
// allow: HS256 with a secret, RS256 or ES256 with a public key. An empty
// configuration is an error: walcast never serves unauthenticated.
func NewVerifier(cfg AuthConfig) (*Verifier, error) {
	v := &Verifier{cfg: cfg}
	if len(cfg.Secret) > 0 {
		v.methods = append(v.methods, "HS256")
	}
	if cfg.PublicKey != nil {
		v.methods = append(v.methods, "RS256", "ES256")
	}
	if len(v.methods) == 0 {
		return nil, errors.New("no JWT key configured: set --jwt-secret or --jwt-public-key")
	}
	if v.cfg.Leeway == 0 {
		v.cfg.Leeway = 30 * time.Second
	}
	return v, nil
}

// AuthError is why a token was refused; Reason is safe to show the client
// and to use as a metric label.
type AuthError struct {
	Reason string // missing, malformed, signature, algorithm, expired, not_yet_valid, refresh_token, issuer, audience, claims
	Detail string
}

func (e *AuthError) Error() string { return "token refused (" + e.Reason + "): " + e.Detail }

// Verify checks a token's signature, algorithm, times and type, and
// returns the principal it names.
func (v *Verifier) Verify(token string) (*Principal, error) {
	if token == "" {
		return nil, &AuthError{Reason: "missing", Detail: "no token: pass ?token= or an Authorization: Bearer header"}
	}
	opts := []jwt.ParserOption{
		// Numbers stay their JSON text, so an id above 2^53 is read
		// exactly instead of rounded through float64.
		jwt.WithJSONNumber(),
		jwt.WithValidMethods(v.methods),
		jwt.WithLeeway(v.cfg.Leeway),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	}
	if v.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.cfg.Issuer))
	}
	if v.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.cfg.Audience))
	}
	claims := jwt.MapClaims{}
	_, err := jwt.NewParser(opts...).ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		switch t.Method.Alg() {
		case "HS256":
			return v.cfg.Secret, nil
		case "RS256", "ES256":
			return v.cfg.PublicKey, nil
		}
		return nil, fmt.Errorf("algorithm %s not allowed", t.Method.Alg())
	})
	if err != nil {
		return nil, classify(err)
	}
	return principalFrom(claims)
}

func classify(err error) *AuthError {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return &AuthError{Reason: "malformed", Detail: "not a JWT"}
	case errors.Is(err, jwt.ErrTokenSignatureInvalid) && strings.Contains(err.Error(), "signing method"):
		return &AuthError{Reason: "algorithm", Detail: "signing algorithm not allowed"}
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return &AuthError{Reason: "algorithm", Detail: "signing algorithm not allowed"}
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return &AuthError{Reason: "signature", Detail: "bad signature"}
	case errors.Is(err, jwt.ErrTokenExpired):
		return &AuthError{Reason: "expired", Detail: "token expired"}
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return &AuthError{Reason: "claims", Detail: "token has no exp claim"}
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return &AuthError{Reason: "not_yet_valid", Detail: "token not valid yet"}
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return &AuthError{Reason: "issuer", Detail: "wrong issuer"}
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return &AuthError{Reason: "audience", Detail: "wrong audience"}
	}
	return &AuthError{Reason: "malformed", Detail: "token could not be verified"}
}

// principalFrom reads walcast's claims: user_id (simplejwt's name) or sub,
// role, committees, and token_type, which must not say refresh.
func principalFrom(c jwt.MapClaims) (*Principal, error) {
	if tt, _ := c["token_type"].(string); tt != "" && tt != "access" {
		return nil, &AuthError{Reason: "refresh_token", Detail: fmt.Sprintf("token_type %q: use an access token", tt)}
	}
	p := &Principal{Committees: map[int64]bool{}}
	uid, ok := c["user_id"]
	if !ok {
		uid, ok = c["sub"]
	}
	if !ok {
		// Every cap per user would be void for it (simplejwt always sets
		// user_id).
		return nil, &AuthError{Reason: "claims", Detail: "token names no user: user_id or sub is required"}
	}
	id, err := claimInt(uid)
	if err != nil {
		return nil, &AuthError{Reason: "claims", Detail: "user_id: " + err.Error()}
	}
	p.UserID, p.HasUser = id, true
	if r, ok := c["role"]; ok {
		s, ok := r.(string)
		if !ok {
			return nil, &AuthError{Reason: "claims", Detail: "role is not a string"}
		}
		p.Role = s
	}
	if cs, ok := c["committees"]; ok && cs != nil {
		list, ok := cs.([]any)
		if !ok {
			return nil, &AuthError{Reason: "claims", Detail: "committees is not a list"}
		}
		for _, v := range list {
			id, err := claimInt(v)
			if err != nil {
				return nil, &AuthError{Reason: "claims", Detail: "committees: " + err.Error()}
			}
			p.Committees[id] = true
		}
	}
	exp, err := c.GetExpirationTime()
	if err != nil || exp == nil {
		return nil, &AuthError{Reason: "claims", Detail: "token has no valid exp claim"}
	}
	p.Expires = exp.Time
	return p, nil
}

// claimInt reads an id claim as an exact 64-bit integer: a JSON integer
// or a string of one (simplejwt may send ids as strings). 1.5, 1e3,
// 9007199254740993.0, "abc" and anything outside int64 are refused rather
// than rounded, so no token can stand for another id.
func claimInt(v any) (int64, error) {
	var text string
	switch n := v.(type) {
	case json.Number:
		text = string(n)
	case string:
		text = n
	default:
		return 0, fmt.Errorf("%v is not an integer id", v)
	}
	id, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not an exact 64-bit integer id", text)
	}
	return id, nil
}

// MintToken signs an HS256 access token, for `walcast token`, the demo and
// tests.
func MintToken(secret []byte, userID int64, role string, committees []int64, ttl time.Duration) (string, error) {
	now := time.Now()
	claims := jwt.MapClaims{
		"token_type": "access",
		"user_id":    userID,
		"iat":        now.Unix(),
		"exp":        now.Add(ttl).Unix(),
	}
	if role != "" {
		claims["role"] = role
	}
	if committees != nil {
		claims["committees"] = committees
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}
