// Command oidcprovider is a real OpenID provider for sekisho's tests and
// for trying the console's single sign-on by hand: zitadel/oidc's op
// package (an OpenID-certified implementation), served with the storage
// and login page of its example server, test users with groups and extra
// claims read from a JSON file, and one registered confidential client.
//
// It is its own Go module so that the main module does not inherit the
// provider's dependencies. It is not a production identity provider:
// passwords are plain in the users file, keys live in memory, and the
// fault flags (-audience, -id-token-lifetime) make it issue tokens no
// provider should, so that the tests can check that sekisho refuses them.
//
//	oidcprovider -listen 127.0.0.1:9998 -users users.json \
//	  -client-id sekisho -client-secret-file secret \
//	  -redirect-uri http://127.0.0.1:8080/oidc/callback \
//	  -post-logout-uri http://127.0.0.1:8080/
//
// users.json:
//
//	[{"id": "u1", "username": "kenji", "password": "pw",
//	  "groups": ["sec-admins"], "claims": {"sekisho_technician": "kenji"}}]
//
// It prints "oidcprovider ready ISSUER" once it accepts connections, and
// one line per request it serves (the tests look for /end_session there).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// listFlag is a flag that may be given several times.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "oidcprovider:", err)
		os.Exit(1)
	}
}

func run() error {
	var redirects, logouts listFlag
	listen := flag.String("listen", "127.0.0.1:9998", "address to serve on (host:port)")
	usersFile := flag.String("users", "", "JSON file of the test users (required)")
	clientID := flag.String("client-id", "sekisho", "the registered client's ID")
	secretFile := flag.String("client-secret-file", "", "file holding the registered client's secret (required)")
	flag.Var(&redirects, "redirect-uri", "a redirect URI of the client (repeatable)")
	flag.Var(&logouts, "post-logout-uri", "a post-logout redirect URI of the client (repeatable)")
	audience := flag.String("audience", "", "fault: issue ID tokens for this audience instead of the client")
	lifetime := flag.Duration("id-token-lifetime", time.Hour, "ID token lifetime; a negative one issues tokens already expired (fault)")
	flag.Parse()
	if *usersFile == "" || *secretFile == "" || len(redirects) == 0 {
		return errors.New("-users, -client-secret-file and at least one -redirect-uri are required")
	}
	secret, err := os.ReadFile(*secretFile)
	if err != nil {
		return err
	}
	users, err := loadUsers(*usersFile)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	issuer := "http://" + ln.Addr().String()

	web := storage.WebClient(*clientID, strings.TrimSpace(string(secret)), redirects...)
	st := &providerStorage{
		Storage:  storage.NewStorageWithClients(users, map[string]*storage.Client{*clientID: web}),
		users:    users,
		client:   &client{Client: web, logouts: logouts, lifetime: *lifetime},
		audience: *audience,
	}
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelInfo}))
	router := exampleop.SetupServer(issuer, st, logger, false)
	srv := &http.Server{Handler: st.otherAudience(router), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Println("oidcprovider ready", issuer)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// testUser is a user of the users file: the example storage's user, and
// what a directory would add, groups and claims of the operator's choice
// (the sekisho technician's name among them).
type testUser struct {
	ID       string         `json:"id"`
	Username string         `json:"username"`
	Password string         `json:"password"`
	Email    string         `json:"email"`
	Groups   []string       `json:"groups"`
	Claims   map[string]any `json:"claims"`
}

// userStore is the example storage's UserStore over the users file.
type userStore struct {
	byID map[string]*storage.User
	more map[string]testUser
}

func loadUsers(path string) (*userStore, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var list []testUser
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	u := &userStore{byID: map[string]*storage.User{}, more: map[string]testUser{}}
	for _, t := range list {
		if t.ID == "" || t.Username == "" {
			return nil, fmt.Errorf("%s: every user needs an id and a username", path)
		}
		u.byID[t.ID] = &storage.User{ID: t.ID, Username: t.Username, Password: t.Password, FirstName: t.Username,
			LastName: "Test", Email: t.Email, EmailVerified: t.Email != ""}
		u.more[t.ID] = t
	}
	return u, nil
}

func (u *userStore) GetUserByID(id string) *storage.User { return u.byID[id] }

func (u *userStore) GetUserByUsername(name string) *storage.User {
	for _, x := range u.byID {
		if x.Username == name {
			return x
		}
	}
	return nil
}

func (u *userStore) ExampleClientID() string { return storage.ServiceUserID }

// client is the registered client as the example storage makes it, with
// post-logout redirect URIs, the "groups" scope allowed, the profile and
// email claims put into the ID token as most providers do, and the ID
// token lifetime of the flags.
type client struct {
	*storage.Client
	logouts  []string
	lifetime time.Duration
}

func (c *client) PostLogoutRedirectURIs() []string     { return c.logouts }
func (c *client) IsScopeAllowed(scope string) bool     { return scope == "groups" }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c *client) IDTokenLifetime() time.Duration       { return c.lifetime }
func (c *client) RedirectURIGlobs() []string           { return nil }
func (c *client) PostLogoutRedirectURIGlobs() []string { return nil }
func (c *client) ClockSkew() time.Duration             { return 0 }
func (c *client) DevMode() bool                        { return true }
func (c *client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeBearer }
func (c *client) ApplicationType() op.ApplicationType  { return op.ApplicationTypeWeb }
func (c *client) AuthMethod() oidc.AuthMethod          { return oidc.AuthMethodBasic }
func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *client) GrantTypes() []oidc.GrantType { return []oidc.GrantType{oidc.GrantTypeCode} }
func (c *client) LoginURL(id string) string    { return "/login/username?authRequestID=" + id }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// providerStorage is the example storage with the test users' groups and
// claims in ID tokens and userinfo, and the audience fault.
type providerStorage struct {
	*storage.Storage
	users    *userStore
	client   *client
	audience string
}

// GetClientByClientID answers the registered client with this program's
// additions.
func (s *providerStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	if id != s.client.GetID() {
		return nil, errors.New("client not found")
	}
	return s.client, nil
}

// SetUserinfoFromRequest is called for ID tokens.
func (s *providerStorage) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, info, req, scopes); err != nil {
		return err
	}
	s.addClaims(info, req.GetSubject(), scopes)
	return nil
}

// SetUserinfoFromToken is called for the userinfo endpoint.
func (s *providerStorage) SetUserinfoFromToken(ctx context.Context, info *oidc.UserInfo, tokenID, subject, origin string) error {
	if err := s.Storage.SetUserinfoFromToken(ctx, info, tokenID, subject, origin); err != nil {
		return err
	}
	s.addClaims(info, info.Subject, []string{"groups"})
	return nil
}

func (s *providerStorage) addClaims(info *oidc.UserInfo, subject string, scopes []string) {
	u, ok := s.users.more[subject]
	if !ok {
		return
	}
	for _, sc := range scopes {
		if sc == "groups" && u.Groups != nil {
			info.AppendClaims("groups", u.Groups)
		}
	}
	for k, v := range u.Claims {
		info.AppendClaims(k, v)
	}
}

// otherAudience is the -audience fault: it signs the ID token of every
// token response again, with the provider's own key, for audience
// instead of the client. op always puts the client into the audience,
// as a provider must; a token meant for another client is what sekisho
// has to refuse.
func (s *providerStorage) otherAudience(next http.Handler) http.Handler {
	if s.audience == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/oauth/token" {
			next.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		var resp map[string]any
		if rec.Code == http.StatusOK && json.Unmarshal(body, &resp) == nil {
			if raw, ok := resp["id_token"].(string); ok {
				tok, err := s.resign(r.Context(), raw)
				if err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				resp["id_token"] = tok
				body, _ = json.Marshal(resp)
			}
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		w.Write(body)
	})
}

// resign returns the ID token raw for s.audience, signed as op signs.
func (s *providerStorage) resign(ctx context.Context, raw string) (string, error) {
	jws, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return "", err
	}
	var claims map[string]any
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims); err != nil {
		return "", err
	}
	claims["aud"] = []string{s.audience}
	claims["azp"] = s.audience
	claims["client_id"] = s.audience
	key, err := s.SigningKey(ctx)
	if err != nil {
		return "", err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: key.SignatureAlgorithm(), Key: &jose.JSONWebKey{Key: key.Key(), KeyID: key.ID()}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}
