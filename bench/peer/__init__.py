"""Side-by-side benchmark against a peer trainer (Piper's Lightning VITS); importable without the peer."""
