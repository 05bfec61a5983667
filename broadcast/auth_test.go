package broadcast

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var secret = []byte("unit-test-secret")

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerifierRefusesBadTokens(t *testing.T) {
	v, err := NewVerifier(AuthConfig{Secret: secret, Issuer: "election"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	good := jwt.MapClaims{"user_id": 7, "role": "supervisor", "committees": []int{1, 2}, "exp": now.Add(time.Hour).Unix(), "iss": "election", "token_type": "access"}
	with := func(k string, val any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for kk, vv := range good {
			c[kk] = vv
		}
		if val == nil {
			delete(c, k)
		} else {
			c[k] = val
		}
		return c
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	noneTok := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good)
	cases := []struct {
		name, token, reason string
	}{
		{"missing", "", "missing"},
		{"garbage", "not.a.jwt", "malformed"},
		{"wrong key", sign(t, jwt.SigningMethodHS256, []byte("other"), good), "signature"},
		{"alg none", noneTok, "algorithm"},
		{"unexpected alg", sign(t, jwt.SigningMethodES256, ecKey, good), "algorithm"},
		{"HS512", sign(t, jwt.SigningMethodHS512, secret, good), "algorithm"},
		{"expired", sign(t, jwt.SigningMethodHS256, secret, with("exp", now.Add(-time.Hour).Unix())), "expired"},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, secret, with("nbf", now.Add(time.Hour).Unix())), "not_yet_valid"},
		{"no exp", sign(t, jwt.SigningMethodHS256, secret, with("exp", nil)), "claims"},
		{"refresh", sign(t, jwt.SigningMethodHS256, secret, with("token_type", "refresh")), "refresh_token"},
		{"wrong issuer", sign(t, jwt.SigningMethodHS256, secret, with("iss", "elsewhere")), "issuer"},
		{"bad committees", sign(t, jwt.SigningMethodHS256, secret, with("committees", "all")), "claims"},
	}
	for _, c := range cases {
		_, err := v.Verify(c.token)
		ae, ok := err.(*AuthError)
		if !ok {
			t.Errorf("%s: err = %v, want an AuthError", c.name, err)
			continue
		}
		if ae.Reason != c.reason {
			t.Errorf("%s: reason %q (%v), want %q", c.name, ae.Reason, ae, c.reason)
		}
	}
	p, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, good))
	if err != nil {
		t.Fatal(err)
	}
	if p.UserID != 7 || p.Role != "supervisor" || !p.Committees[2] || p.Committees[3] {
		t.Errorf("principal = %+v", p)
	}
}

// djangorestframework-simplejwt's access tokens verify as they come.
func TestSimpleJWTAccessToken(t *testing.T) {
	v, _ := NewVerifier(AuthConfig{Secret: secret})
	tok := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{
		"token_type": "access", "exp": time.Now().Add(5 * time.Minute).Unix(), "iat": time.Now().Unix(),
		"jti": "e0b1c8d3f2a94d3c9a8b7c6d5e4f3a2b", "user_id": "12",
	})
	p, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if p.UserID != 12 || !p.HasUser || p.Role != "" {
		t.Errorf("principal = %+v", p)
	}
}

func TestNoKeyIsAnError(t *testing.T) {
	if _, err := NewVerifier(AuthConfig{}); err == nil || !strings.Contains(err.Error(), "--jwt-secret") {
		t.Errorf("err = %v", err)
	}
}

func TestRS256WithPublicKeyFile(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	path := filepath.Join(t.TempDir(), "jwt.pub")
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
	pub, err := LoadPublicKey(path)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := NewVerifier(AuthConfig{PublicKey: pub})
	claims := jwt.MapClaims{"user_id": 3, "exp": time.Now().Add(time.Hour).Unix()}
	if _, err := v.Verify(sign(t, jwt.SigningMethodRS256, key, claims)); err != nil {
		t.Errorf("RS256 token refused: %v", err)
	}
	// An HS256 token "signed" with the public key is the classic confusion
	// attack: no secret is configured, so HS256 is not allowed at all.
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, der, claims)); err == nil {
		t.Error("HS256 token signed with the public key was accepted")
	}
	if _, err := LoadPublicKey(filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Error("missing key file accepted")
	}
}
