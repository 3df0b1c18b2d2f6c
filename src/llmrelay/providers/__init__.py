"""Provider adapters (one per wire dialect) and the format conversions at the edges."""
