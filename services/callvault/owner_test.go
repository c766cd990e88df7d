package callvault_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOnlyPolicyWritesTheCatalog: the gateway and ingest reach the catalog
// through catalog.Reader (reads only) and never construct a writable
// catalog or hand the Redis client to anything else, so the policy service
// stays the one owner of the catalog's keys.
func TestOnlyPolicyWritesTheCatalog(t *testing.T) {
	for _, dir := range []string{"../gateway", "../ingest"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no sources (%v)", dir, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			file, err := parser.ParseFile(token.NewFileSet(), f, src, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(file, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if x, ok := sel.X.(*ast.Ident); ok && x.Name == "catalog" && (sel.Sel.Name == "New" || sel.Sel.Name == "Catalog") {
					t.Errorf("%s uses catalog.%s: only the policy service may hold a writable catalog", f, sel.Sel.Name)
				}
				if sel.Sel.Name == "Redis" {
					if call, ok := parentCall(file, sel); !ok || !isReaderConstructor(call) {
						t.Errorf("%s uses the Redis client other than to build a catalog.Reader or a lag check", f)
					}
				}
				return true
			})
		}
	}
}

// parentCall finds the call that takes expr as an argument.
func parentCall(file *ast.File, expr ast.Expr) (*ast.CallExpr, bool) {
	var found *ast.CallExpr
	ast.Inspect(file, func(n ast.Node) bool {
		if c, ok := n.(*ast.CallExpr); ok {
			for _, a := range c.Args {
				if a == expr {
					found = c
				}
			}
		}
		return found == nil
	})
	return found, found != nil
}

func isReaderConstructor(c *ast.CallExpr) bool {
	sel, ok := c.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	x, ok := sel.X.(*ast.Ident)
	return ok && x.Name == "catalog" && (sel.Sel.Name == "NewReader" || sel.Sel.Name == "NewLagCheck")
}
