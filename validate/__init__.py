"""invoke validate: prove a tree will load on Lambda before anything is deployed."""
