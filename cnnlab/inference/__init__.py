"""Using a trained model: rebuild it from its checkpoint alone, evaluate it, predict with it, export it."""
