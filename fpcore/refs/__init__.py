"""References: the library of named fingerprints and everything that stores, finds and shares them."""
