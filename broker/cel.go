package broker

import (
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/ext"
)

// The inputs a rule's condition (a CEL expression) sees. Field names in
// CEL are the cel tags: technician.country, source.network,
// target.labels["env"], and so on.

// TechnicianInput describes the technician to a condition.
type TechnicianInput struct {
	Name      string   `cel:"name" json:"name"`
	Affiliate string   `cel:"affiliate" json:"affiliate"`
	Country   string   `cel:"country" json:"country"` // the affiliate's country
	Groups    []string `cel:"groups" json:"groups"`
}

// SourceInput describes where the connection comes from.
type SourceInput struct {
	Address string `cel:"address" json:"address"` // IP address
	Country string `cel:"country" json:"country"` // "" when no network or GeoIP database knows it
	Network string `cel:"network" json:"network"` // name of the configured network it is in, or ""
}

// TargetInput describes the target.
type TargetInput struct {
	Name      string            `cel:"name" json:"name"`
	Residency string            `cel:"residency" json:"residency"`
	Zone      string            `cel:"zone" json:"zone"` // IANA time zone of the target
	Data      []string          `cel:"data" json:"data"`
	Labels    map[string]string `cel:"labels" json:"labels"`
}

// Inputs are all the values a decision was made from. They go into the
// trace, so a reviewer sees what the rules saw.
type Inputs struct {
	Technician  TechnicianInput `json:"technician"`
	Source      SourceInput     `json:"source"`
	Target      TargetInput     `json:"target"`
	Now         time.Time       `json:"now"` // in the target's zone
	CrossBorder bool            `json:"cross_border"`
}

func (in Inputs) activation() map[string]any {
	return map[string]any{
		"technician":   in.Technician,
		"source":       in.Source,
		"target":       in.Target,
		"now":          in.Now,
		"cross_border": in.CrossBorder,
	}
}

// conditionCostLimit bounds the work of evaluating one condition, so a
// rule cannot stall decisions.
const conditionCostLimit = 100_000

func newCELEnv() (*cel.Env, error) {
	return cel.NewEnv(
		ext.NativeTypes(
			reflect.TypeOf(TechnicianInput{}), reflect.TypeOf(SourceInput{}), reflect.TypeOf(TargetInput{}),
			ext.ParseStructTags(true),
		),
		ext.Strings(),
		cel.Variable("technician", cel.ObjectType("broker.TechnicianInput")),
		cel.Variable("source", cel.ObjectType("broker.SourceInput")),
		cel.Variable("target", cel.ObjectType("broker.TargetInput")),
		cel.Variable("now", cel.TimestampType),
		cel.Variable("cross_border", cel.BoolType),
	)
}

// ConditionError is a condition that does not compile; it names the rule
// and the position in the expression.
type ConditionError struct {
	Rule   string
	Detail string // cel-go's message, with line:column and a caret
}

func (e *ConditionError) Error() string {
	return fmt.Sprintf("rule %s: condition: %s", e.Rule, e.Detail)
}

func compileCondition(env *cel.Env, rule, expr string) (cel.Program, error) {
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, &ConditionError{Rule: rule, Detail: iss.Err().Error()}
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, &ConditionError{Rule: rule, Detail: fmt.Sprintf("the expression is of type %s; a condition must be true or false", ast.OutputType())}
	}
	prg, err := env.Program(ast, cel.CostLimit(conditionCostLimit))
	if err != nil {
		return nil, &ConditionError{Rule: rule, Detail: err.Error()}
	}
	return prg, nil
}

// NewPolicy compiles and type-checks every rule's condition. The error
// names the first rule that does not compile and where.
func NewPolicy(rules []Rule) (*Policy, error) {
	env, err := newCELEnv()
	if err != nil {
		return nil, fmt.Errorf("rule environment: %w", err)
	}
	p := &Policy{Rules: append([]Rule(nil), rules...)}
	var errs []error
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.When == "" {
			continue
		}
		prg, err := compileCondition(env, r.Name, r.When)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r.cond = prg
	}
	return p, errors.Join(errs...)
}

// evalCondition runs a rule's condition. An evaluation error is returned
// to the caller, which decides what it means for the rule's effect.
func (r *Rule) evalCondition(in Inputs) (bool, error) {
	if r.cond == nil {
		return true, nil
	}
	out, _, err := r.cond.Eval(in.activation())
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("condition gave %v, not true or false", out.Value())
	}
	return b, nil
}
