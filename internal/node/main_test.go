package node

import (
	"testing"

	"github.com/sekisho/sekisho/internal/pgtest"
)

// TestMain stops the PostgreSQL server the cluster tests started.
func TestMain(m *testing.M) { pgtest.Main(m) }
