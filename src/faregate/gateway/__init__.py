"""The request pipeline: one readable function per endpoint kind, composing the stages."""
