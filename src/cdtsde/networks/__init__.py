"""Networks shared by the methods."""
