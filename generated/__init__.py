"""Generated stacks for the bundled specs (do not edit by hand: run `ttgen generate`)."""
