package broker

import (
	"net/netip"
	"strings"
	"testing"
)

func TestLintSamplesNetworksDaysAndWarnsOnUTC(t *testing.T) {
	aiko, li, db, web := celFixture()
	office := &Network{Name: "tokyo-office", Country: "JP", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}
	p, err := NewPolicy([]Rule{
		{Name: "from-office", Effect: Allow, When: `source.network == "tokyo-office" && "pii" in target.data`},
		{Name: "mondays-noon", Effect: Allow, When: `now.getDayOfWeek(target.zone) == 1 && now.getHours(target.zone) == 12`},
		{Name: "utc-hours", Effect: Allow, When: `now.getHours() < 25`},
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range p.Lint([]*Technician{aiko, li}, []*Target{db, web}, []*Network{office}) {
		got = append(got, f.String())
	}
	all := strings.Join(got, "\n")
	for _, bad := range []string{"rule from-office: never matches", "rule mondays-noon: never matches"} {
		if strings.Contains(all, bad) {
			t.Errorf("false finding %q:\n%s", bad, all)
		}
	}
	for _, want := range []string{
		"rule utc-hours: reads now without a time zone",
		"rule from-office: allows personal data (pii) across borders without approval, e.g. li to db-jp-01 from network tokyo-office (JP)",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("missing finding %q:\n%s", want, all)
		}
	}
}
