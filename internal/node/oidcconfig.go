package node

import (
	"net"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/sekisho/sekisho/web"
)

// validateOIDC checks web.oidc and fills its defaults; console is
// web.url, parsed.
func (c *Config) validateOIDC(o *OIDCSection, console *url.URL) error {
	if o.Issuer == "" {
		return c.errf(o.line, "web.oidc: issuer is required: the identity provider's issuer URL, as its discovery document (/.well-known/openid-configuration) names it")
	}
	iu, err := url.Parse(o.Issuer)
	if err != nil || iu.Host == "" || (iu.Scheme != "https" && iu.Scheme != "http") {
		return c.errf(o.line, "web.oidc.issuer %q: write the provider's issuer URL, such as https://idp.example.com/realms/ops", o.Issuer)
	}
	if iu.Scheme == "http" && !loopbackHost(iu.Hostname()) {
		return c.errf(o.line, "web.oidc.issuer %q is plain http:// to another host: tokens and keys would cross the network unauthenticated; use the provider's https:// issuer", o.Issuer)
	}
	if o.ClientID == "" {
		return c.errf(o.line, "web.oidc: client_id is required: the console's client ID as registered with the provider")
	}
	if o.ClientSecretFile == "" {
		return c.errf(o.line, "web.oidc: client_secret_file is required: a file holding the client secret the provider gave the console (the secret never goes in the config)")
	}
	b, err := os.ReadFile(c.Path(o.ClientSecretFile))
	if err != nil {
		return c.errf(o.line, "web.oidc.client_secret_file: %v", err)
	}
	o.secret = strings.TrimSpace(string(b))
	if o.secret == "" || strings.ContainsAny(o.secret, "\r\n") {
		return c.errf(o.line, "web.oidc.client_secret_file %s: the file must hold the client secret on one line", o.ClientSecretFile)
	}
	base := strings.TrimSuffix(console.Scheme+"://"+console.Host, "/")
	if o.RedirectURL == "" {
		o.RedirectURL = base + "/oidc/callback"
	}
	if ru, err := url.Parse(o.RedirectURL); err != nil || ru.Scheme+"://"+ru.Host != base || ru.Path != "/oidc/callback" {
		return c.errf(o.line, "web.oidc.redirect_url %q: it must be %s/oidc/callback, the console's own callback (web.url): the browser's sign-in cookie is set there", o.RedirectURL, base)
	}
	if o.PostLogoutRedirectURL == "" {
		o.PostLogoutRedirectURL = base + "/signed-out"
	}
	if pu, err := url.Parse(o.PostLogoutRedirectURL); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
		return c.errf(o.line, "web.oidc.post_logout_redirect_url %q: write an absolute URL, such as %s/signed-out", o.PostLogoutRedirectURL, base)
	}
	if len(o.Scopes) == 0 {
		o.Scopes = []string{"openid", "profile", "email", "groups"}
	}
	if !slices.Contains(o.Scopes, "openid") {
		return c.errf(o.line, "web.oidc.scopes %v: openid is required, or the provider sends no ID token", o.Scopes)
	}
	if o.TechnicianClaim == "" {
		return c.errf(o.line, "web.oidc: technician_claim is required: the ID token claim naming the sekisho technician, e.g. preferred_username, or a claim of your own such as sekisho_technician")
	}
	if o.GroupsClaim == "" {
		o.GroupsClaim = "groups"
	}
	granted := false
	for role, groups := range o.Roles {
		if !slices.Contains(web.ConsoleRoles, role) {
			return c.errf(o.line, "web.oidc.roles: %q is not a console role: map groups to admin, approver or reviewer", role)
		}
		for _, g := range groups {
			if strings.TrimSpace(g) == "" {
				return c.errf(o.line, "web.oidc.roles.%s: a group name is empty", role)
			}
		}
		granted = granted || len(groups) > 0
	}
	if !granted {
		return c.errf(o.line, "web.oidc.roles maps no group to a role: nobody could sign in; e.g. roles: {admin: [sec-admins], approver: [jp-approvers], reviewer: [sec-review]}")
	}
	if o.Name == "" {
		o.Name = iu.Hostname()
	}
	return nil
}

func loopbackHost(host string) bool {
	ip := net.ParseIP(host)
	return strings.EqualFold(host, "localhost") || ip != nil && ip.IsLoopback()
}

// consoleOIDC is the console's view of web.oidc; nil without it.
func (c *Config) consoleOIDC() *web.OIDCConfig {
	o := c.Web.OIDC
	if o == nil {
		return nil
	}
	roles := map[string][]string{}
	for k, v := range o.Roles {
		roles[k] = slices.Clone(v)
	}
	return &web.OIDCConfig{Name: o.Name, Issuer: o.Issuer, ClientID: o.ClientID, ClientSecret: o.secret,
		RedirectURL: o.RedirectURL, PostLogoutRedirectURL: o.PostLogoutRedirectURL, Scopes: slices.Clone(o.Scopes),
		TechnicianClaim: o.TechnicianClaim, GroupsClaim: o.GroupsClaim, Roles: roles}
}
