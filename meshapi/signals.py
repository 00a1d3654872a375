from django.dispatch import Signal

# Sent after a transaction that changed a mesh commits; receivers get `mesh_id` and
# `revision`. The compiler pipeline listens here.
mesh_changed = Signal()
