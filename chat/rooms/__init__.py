"""Multi-user chat rooms: models, presence, sockets, APIs and the assistant as a member."""
