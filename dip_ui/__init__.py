"""`dip ui`: restore an image in the browser (a local Starlette app; see dip_ui/server.py for why Starlette)."""
