"""What every run shares, whoever launches it: how it is launched (`launching`; the
instance the CLI records its runs in: `instance`), tagged (`run_tags`), configured and refused
at launch (`launchpad`, `partitions`), and retried (`policies`)."""
