package storetest

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/broker"
)

func TestSessionsFilters(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		s := e.open(t)
		base := e.base
		type fields struct {
			affiliate, country, residency, reason string
			files                                 int // -1: not indexed
		}
		sessions := []struct {
			id string
			fields
		}{
			{"s1", fields{"ops-jp", "JP", "JP", "technician logged out", 2}},
			{"s2", fields{"ops-sg", "SG", "SG", "Target Closed The Connection", 0}},
			{"s3", fields{"ops-jp", "CN", "SG", "locked by ÉCOLE admin", -1}},
			{"s4", fields{"ops-cn", "", "DE", "", 1}},
			{"s5", fields{"ops-jp", "JP", "JP", "grant ended", 0}},
		}
		for i, c := range sessions {
			r := record(c.id, "aiko", "db-jp-01", base.Add(time.Duration(i+1)*time.Minute))
			r.Affiliate, r.SourceCountry, r.Residency = c.affiliate, c.country, c.residency
			r.Node = "node-" + strings.ToLower(c.residency)
			if err := s.StartSession(ctx, r); err != nil {
				t.Fatal(err)
			}
			if c.reason != "" {
				if err := s.EndSession(ctx, c.id, broker.SessionEnd{At: r.StartedAt.Add(time.Second), Reason: c.reason}); err != nil {
					t.Fatal(err)
				}
			}
			if c.files >= 0 {
				if err := s.IndexSessionText(ctx, c.id, broker.SessionText{Files: c.files}); err != nil {
					t.Fatal(err)
				}
			}
		}
		yes, no := true, false
		tests := []struct {
			name string
			f    broker.SessionFilter
			want []string
		}{
			{"none", broker.SessionFilter{}, []string{"s5", "s4", "s3", "s2", "s1"}},
			{"until is exclusive", broker.SessionFilter{Until: base.Add(3 * time.Minute)}, []string{"s2", "s1"}},
			{"since and until", broker.SessionFilter{Since: base.Add(2 * time.Minute), Until: base.Add(4*time.Minute + e.tick)}, []string{"s4", "s3", "s2"}},
			{"affiliate", broker.SessionFilter{Affiliate: "ops-jp"}, []string{"s5", "s3", "s1"}},
			{"affiliate is exact", broker.SessionFilter{Affiliate: "ops"}, nil},
			{"source country", broker.SessionFilter{SourceCountry: "JP"}, []string{"s5", "s1"}},
			{"residency", broker.SessionFilter{Residency: "SG"}, []string{"s3", "s2"}},
			{"node", broker.SessionFilter{Node: "node-sg"}, []string{"s3", "s2"}},
			{"node is exact", broker.SessionFilter{Node: "node"}, nil},
			{"residencies nil is any", broker.SessionFilter{Residencies: nil}, []string{"s5", "s4", "s3", "s2", "s1"}},
			{"residencies empty is none", broker.SessionFilter{Residencies: []string{}}, nil},
			{"residencies", broker.SessionFilter{Residencies: []string{"JP", "DE"}}, []string{"s5", "s4", "s1"}},
			{"residencies and residency", broker.SessionFilter{Residencies: []string{"JP"}, Residency: "SG"}, nil},
			{"residencies is exact", broker.SessionFilter{Residencies: []string{"jp", "J%"}}, nil},
			{"end reason ignores case", broker.SessionFilter{EndReason: "target closed"}, []string{"s2"}},
			{"end reason ignores ASCII case", broker.SessionFilter{EndReason: "ÉcOlE"}, []string{"s3"}},
			{"end reason ignores ASCII case only", broker.SessionFilter{EndReason: "école"}, nil},
			{"end reason substring", broker.SessionFilter{EndReason: "ED"}, []string{"s5", "s3", "s2", "s1"}},
			{"end reason percent is literal", broker.SessionFilter{EndReason: "%"}, nil},
			{"end reason underscore is literal", broker.SessionFilter{EndReason: "_"}, nil},
			{"has files", broker.SessionFilter{HasFiles: &yes}, []string{"s4", "s1"}},
			{"has no files, not indexed included", broker.SessionFilter{HasFiles: &no}, []string{"s5", "s3", "s2"}},
			{"live", broker.SessionFilter{Live: true}, []string{"s4"}},
			{"limit", broker.SessionFilter{Limit: 2}, []string{"s5", "s4"}},
			{"offset", broker.SessionFilter{Offset: 3}, []string{"s2", "s1"}},
			{"limit and offset", broker.SessionFilter{Limit: 2, Offset: 2}, []string{"s3", "s2"}},
			{"offset past the end", broker.SessionFilter{Offset: 9}, nil},
			{"combined", broker.SessionFilter{Affiliate: "ops-jp", Residencies: []string{"JP", "SG"}, HasFiles: &no, Limit: 1, Offset: 1}, []string{"s3"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				got, err := s.Sessions(ctx, tc.f)
				if err != nil {
					t.Fatal(err)
				}
				var gotIDs []string
				for _, r := range got {
					gotIDs = append(gotIDs, r.ID)
				}
				if !reflect.DeepEqual(gotIDs, tc.want) {
					t.Errorf("Sessions(%+v) = %v, want %v", tc.f, gotIDs, tc.want)
				}
			})
		}
	})
}
