// Joining a LiveKit room in the browser, shared by the agent console and the wallboard: the
// room's audio plays in the page; the microphone is on once connected if microphone() says so.
// Returns { room, ready } at once (room null without livekit-client) so the page can leave
// while it is still connecting; ready resolves once connected or failed (onState tells which).
"use strict";
window.Callyard.joinRoom = (grant, microphone, onState) => {
  onState("connecting…");
  if (!window.LivekitClient) {
    onState("livekit-client not installed (run make install)");
    return { room: null, ready: Promise.resolve() };
  }
  const room = new LivekitClient.Room();
  room.on(LivekitClient.RoomEvent.TrackSubscribed, (track) => {
    if (track.kind === "audio") document.body.appendChild(track.attach());
  });
  room.on(LivekitClient.RoomEvent.TrackUnsubscribed, (track) => track.detach().forEach((e) => e.remove()));
  room.on(LivekitClient.RoomEvent.Disconnected, () => onState("disconnected"));
  const ready = (async () => {
    try {
      await room.connect(grant.url, grant.token);
      await room.localParticipant.setMicrophoneEnabled(microphone());
      onState("connected");
    } catch (e) {
      onState("media error: " + e.message);
    }
  })();
  return { room, ready };
};
