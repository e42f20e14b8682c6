"""Small apps the end-to-end tests serve and run, as a user's project would have them."""
