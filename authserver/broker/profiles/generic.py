"""RFC 6749 + RFC 7009 as written: the profile of a platform with no known quirks."""

from __future__ import annotations

from authserver.broker.profiles.base import PlatformProfile

# RFC 6749 + RFC 7009 as written: Basic client auth, space-separated scopes, expires_in
# honoured (10 minutes assumed when absent: our choice), rotation tolerated either way.
PROFILE = PlatformProfile(name="generic", default_expires_in=600)
