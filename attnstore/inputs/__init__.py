"""What a user hands in besides a model: images (`images`), object boxes (`boxes`) and the
synthetic scenes the demo model is trained and shown on (`scenes`). Light: numpy and pillow."""
