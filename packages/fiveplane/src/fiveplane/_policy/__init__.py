"""Policy packs: models, YAML loading with file:line errors, CEL conditions, index, lint and tests."""
