"""The `headway` command: run the server, watch tasks live, list, cancel and delete them."""
