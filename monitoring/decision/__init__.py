"""What the evidence says about a canary: the reads that gather it, health, the verdict."""
