"""Built-in editors; importing this package registers them in kebench.editor.EDITORS."""
