"""Karnak gateway service: shares series delivered by STOW-RS into Kheops albums."""
