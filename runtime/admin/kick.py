"""Runtime admin layer: the reasons `CID_OTHER_SERVER_KICK_USER` carries (IMServerKickUser.reason, a uint32).

TeamTalk's KickReasonType has 1 (a newer login of the same client class) and 2 (a mobile kicked the PC).
KICK_ACCOUNT is a server-to-server reason only: an admin disabled or deleted the account, so every session
of the user ends, whatever its client type. The client is told KICK_REASON_DUPLICATE_USER, the one reason
its enum has for "this session is over" (a TeamTalk client parses no other value).
"""

KICK_DUPLICATE = 1
KICK_MOBILE = 2
KICK_ACCOUNT = 3
