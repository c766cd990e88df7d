package auth_test

import (
	"testing"

	"github.com/callvault/callvault/pkg/auth"
)

// TestBreak3ReservedBootstrapNameLookAlikes guards a defect an attack found (fixed): the name "bootstrap" is
// reserved so that no stored token appears under it in the audit trail,
// but only a case-insensitive exact match is refused. Token names are
// otherwise unchecked, so a name that reads as "bootstrap" in a log or a
// token listing (surrounding whitespace, a trailing newline, a zero-width
// character, Cyrillic letters) is accepted, and a token issued under it
// passes for the bootstrap token to anyone reading the trail.
// Suggested fix: restrict token names to a visible ASCII charset (as
// tenant.CheckName does for users) and compare after trimming.
func TestBreak3ReservedBootstrapNameLookAlikes(t *testing.T) {
	t.Parallel()
	for _, name := range []string{
		"bootstrap ",
		" bootstrap",
		"bootstrap\n",
		"bootstrap\t",
		"boot\u200bstrap",     // zero-width space
		"b\u043e\u043etstrap", // Cyrillic o
		"bootstrap\u00a0",     // no-break space
	} {
		err := auth.ValidateScope(auth.Principal{Name: name, Level: auth.LevelSystem})
		if err == nil {
			t.Errorf("token name %q (reads as bootstrap) was accepted, want refused", name)
		}
	}
}
