// Package providertest holds what every keyrelay secret-manager backend is
// tested with: the shared conformance suite (Run) and a fault-injecting
// wrapper (Faulty) for testing the code that calls providers.
//
// # The conformance suite
//
// Every backend runs Run against its real server or the closest offline
// emulator, from its own _test.go file:
//
//	func TestConformance(t *testing.T) {
//		providertest.Run(t, func(t *testing.T) providers.Provider {
//			p, err := vault.New(...)
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { p.Close() })
//			return p
//		}, providertest.Options{Features: providertest.Features{BinaryValues: true}})
//	}
//
// newProvider is called once per top-level subtest. The suite writes only
// names below Options.Prefix plus a random per-run component, and
// force-deletes (with Adopt) every name it wrote when a subtest ends, so it
// can run against a shared backend.
//
// What Run checks is listed on Run. Tests for what a backend does not
// declare in providers.Capabilities or Features are skipped, never failed.
// Optional interfaces (providers.Versioner, providers.TagUpdater) are
// discovered by type assertion; a method that returns an error wrapping
// errors.ErrUnsupported counts as not implemented. providers.Lister and
// providers.Retirer are found with providers.AsLister and
// providers.AsRetirer, through wrappers; the List and Retire tests are
// skipped, with the reason, for a provider without them.
//
// # Fault injection
//
// NewFaulty wraps a provider and injects failures deterministically (a
// seeded RNG): retryable and throttled errors before the inner call (so a
// failed call never half-writes), permanent errors for chosen names, added
// latency, and "lost responses" after a committed write, which a caller
// must recover from by retrying with the same IdempotencyKey.
package providertest
