package platform

import (
	"net/url"
	"strings"
)

// redacted replaces a password wherever a URL is shown.
const redacted = "xxxxx"

// RedactURL returns raw with the password of every URL in it replaced, for
// logs, banners and error messages. raw may be a comma-separated list (NATS
// takes one). A part that does not parse is shown only up to its scheme:
// it may hold a password that the parser could not find.
func RedactURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		parts[i] = redactOne(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

func redactOne(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if scheme, _, ok := strings.Cut(raw, "://"); ok {
			return scheme + "://" + redacted
		}
		return redacted
	}
	if u.User == nil {
		if strings.Contains(raw, "@") {
			// A password holding "/", "?" or "#" after digits parses as
			// host:port plus a path, query or fragment: the parser found
			// no user, but the text before "@" is one.
			return u.Scheme + "://" + redacted
		}
		return raw
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), redacted)
	} else if u.Scheme != "" && u.User.Username() != "" && strings.HasPrefix(u.Scheme, "nats") {
		// nats://TOKEN@host: the user part is the secret.
		u.User = url.User(redacted)
	}
	return u.String()
}
