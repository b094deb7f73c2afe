package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/mdp/qrterminal/v3"
	"rsc.io/qr"

	"github.com/sekisho/sekisho/broker"
)

func cmdTechnician(ctx context.Context, args []string) error {
	sub, rest := subcommand(args)
	if sub != "enroll-totp" {
		return usageError{msg: "technician: the only subcommand is enroll-totp NAME"}
	}
	return cmdEnrollTOTP(ctx, os.Stdout, rest)
}

// cmdEnrollTOTP makes a new TOTP secret for a technician and prints the
// otpauth URI and its QR code, for the technician's authenticator app.
func cmdEnrollTOTP(ctx context.Context, w io.Writer, args []string) error {
	cfg, fs, err := parseWithConfig("technician enroll-totp", args, nil)
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{msg: "technician enroll-totp: give the technician's name"}
	}
	name := fs.Arg(0)
	store, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	// The secret is sealed by Vault's transit engine before it is stored.
	issuer, err := broker.NewIssuer(cfg.VaultConfig())
	if err != nil {
		return err
	}
	techs, targets, policy := cfg.Domain()
	b := broker.New(broker.Config{Technicians: techs, Targets: targets, Policy: policy, Issuer: issuer, Store: store, Logger: discardLogger()})
	uri, err := b.EnrollTOTP(ctx, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "TOTP enrolled for %s (any earlier one no longer works).\n", name)
	fmt.Fprintf(w, "Give the technician this URI, or let them scan the code, over a channel you trust:\n\n%s\n\n", uri)
	qrterminal.GenerateHalfBlock(uri, qr.M, w)
	return nil
}
