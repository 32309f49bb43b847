"""The contract across every op: signatures, backend choice by array kind, the oracle, gradients, random problems."""
