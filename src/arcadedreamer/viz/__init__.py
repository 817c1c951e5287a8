"""What people look at: dream GIFs and the interactive play window."""
