"""The service runtime (DESIGN.md section 13)."""
