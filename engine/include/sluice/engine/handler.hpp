#pragma once

#include <any>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include <sluice/engine/context.hpp>

/// The callbacks a stage written as a class may define (GenStage's callbacks). A producer needs
/// handle_demand, a producer_consumer and a consumer need handle_events; the others are
/// optional. Every callback runs on the stage instance's own thread, one at a time.
namespace sluice::handler {

/// Producer: `n` more events are wanted (GenStage handle_demand/2). Emit them with ctx.emit.
template <class H, class Out>
concept HandlesDemand = requires(H& h, Context<Out>& c) {
  h.handle_demand(std::size_t{}, c);
};

/// Producer_consumer or consumer: a chunk of events from one subscription (GenStage
/// handle_events/3); the form with a SubscriptionId tells which.
template <class H, class In, class Out>
concept HandlesEvents = requires(H& h, std::span<In> s, Context<Out>& c) {
  h.handle_events(s, c);
};
template <class H, class In, class Out>
concept HandlesEventsFrom = requires(H& h, std::span<In> s, Context<Out>& c) {
  h.handle_events(s, SubscriptionId{}, c);
};
template <class H, class In, class Out>
concept Consumes = HandlesEvents<H, In, Out> || HandlesEventsFrom<H, In, Out>;
/// It reads events it may not modify (a broadcast's shared batches): std::span<const In>.
template <class H, class In, class Out>
concept ConsumesConst = Consumes<H, const In, Out>;

/// An info (GenStage handle_info/2): ctx.async_info, Run::send_info, Run::async_info, a Waker.
template <class H, class Out>
concept HandlesInfo = requires(H& h, std::any& m, Context<Out>& c) {
  h.handle_info(m, c);
};
/// A subscription ended (GenStage handle_cancel/3), on either side.
template <class H, class Out>
concept HandlesCancel = requires(H& h, const CancelInfo& i, Context<Out>& c) {
  h.handle_cancel(i, c);
};
/// A subscription began (GenStage handle_subscribe/4), on either side.
template <class H, class Out>
concept HandlesSubscribe = requires(H& h, const SubscribeInfo& i, Context<Out>& c) {
  h.handle_subscribe(i, c);
};
/// Producer_consumer or consumer: it asks for every event itself with ctx.ask (GenStage's
/// handle_subscribe returning `{:manual, state}`), saying `static constexpr DemandControl demand
/// = DemandControl::manual;`. Every subscription it makes then has manual demand, whatever
/// SubscriptionOptions::demand says: the handler counts on asking, and nothing else would.
template <class H>
concept AsksByHand = requires {
  requires H::demand == DemandControl::manual;
};
/// Producer_consumer or consumer: it decides itself when it is done, saying `static constexpr bool
/// finishes_itself = true;`. When its last input ends, the engine does not finish it (section 6
/// of engine/DESIGN.md): the handler, which learns of each end in handle_cancel, calls
/// ctx.finish() once the work it holds outside the engine is done (a map_blocking stage whose
/// calls are still running). A cancel mode that stops the stage still stops it.
template <class H>
concept FinishesItself = requires {
  requires H::finishes_itself;
};
/// Producer: Run::drain asked it to end its own way (a push source delivers what was pushed).
/// Without it, a drained producer simply finishes.
template <class H, class Out>
concept HandlesDrain = requires(H& h, Context<Out>& c) {
  h.handle_drain(c);
};
/// GenStage's terminate/2: called once when the stage stops, whatever the reason.
template <class H>
concept HandlesTerminate = requires(H& h, const Reason& r) {
  h.handle_terminate(r);
};
/// Events its buffer or dispatcher dropped; return true to have them logged too.
template <class H, class Out>
concept HandlesDiscarded = requires(H& h, std::span<Out> s) {
  { h.handle_discarded(s) } -> std::convertible_to<bool>;
};
/// A stage that holds events outside the engine (a push source's queue, a batch stage's open
/// batches, a map_blocking stage's calls): called once when the stage stops, before
/// handle_terminate, and when it restarts;
/// it discards them and returns how many (counted as `lost`, so Metrics::undelivered includes
/// them).
template <class H>
concept DiscardsHeld = requires(H& h) {
  { h.discard_held() } -> std::convertible_to<std::uint64_t>;
};

/// Its handler can be remade when the stage restarts (StageOptions::restart): a copy of the
/// handler the stage was declared with replaces the failed one, so it is copyable and moves
/// without throwing; a handler whose state belongs to something outside the run (a push
/// source's or a stream's queue, which the application holds) says `static constexpr bool
/// restartable = false`. A restarted handler starts from its state as declared (a generator
/// from its first value), as an OTP process restarts from init.
template <class H>
concept Restartable =
    std::is_copy_constructible_v<H> && std::is_nothrow_move_constructible_v<H> && !requires {
  requires !H::restartable;
};

}  // namespace sluice::handler
