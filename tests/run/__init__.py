"""The restore API around the loop: tiles and tiled resumption, and any size and mode in and out."""
