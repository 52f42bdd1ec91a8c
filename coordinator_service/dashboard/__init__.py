"""The admin dashboard at ``/dashboard``: server-rendered pages that read the admin JSON API (DESIGN.md section 4)."""
