"""Generated wire contract; nothing hand-written lives here."""
