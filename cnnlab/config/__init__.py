"""Config helpers: OmegaConf resolvers and up-front validation."""
